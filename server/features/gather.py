"""`LookupGatherer`: store lookups of concurrent requests sent together, one round trip per window.

Like the batcher gathers inference, the gatherer gathers the keys that missed the local cache:
the first one starts a window (`window_s`; 0 means "the rest of this event-loop turn"), every
key asked for meanwhile joins it, and at its end each view's distinct keys go to the store in
one `get_many` (for Redis one MGET: one round trip). A key already on its way is not asked for
again: its callers share one future (coalesced misses). Answers fill the local cache.

Each round trip first asks the circuit breaker; while it is open the keys fail at once with
`FeatureStoreUnavailable` (no connection attempt), and its outcome is reported back to it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from server.contract.manifest import FeatureView
from server.errors import FeatureStoreUnavailable, FeatureValueInvalid
from server.features.breaker import CircuitBreaker
from server.features.local_cache import LocalCache
from server.features.store import EntityRow, FeatureStore
from server.metrics.instruments import Metrics

logger = logging.getLogger(__name__)

RowFuture = asyncio.Future[EntityRow | None]


class LookupGatherer:
    """Coalesces and gathers store lookups; owned by `FeatureLookup`."""

    def __init__(
        self, store: FeatureStore, cache: LocalCache, breaker: CircuitBreaker, window_s: float, metrics: Metrics
    ) -> None:
        self._store = store
        self._cache = cache
        self._breaker = breaker
        self._window_s = window_s
        backend = store.backend
        self._keys = metrics.feature_round_trip_keys.labels(backend)
        self._duration = metrics.feature_round_trip_duration.labels(backend)
        self._refused = metrics.feature_store_errors.labels(backend, "breaker_open")
        self._errors = metrics.feature_store_errors.labels(backend, "unavailable")
        self._waiting: dict[str, tuple[FeatureView, dict[str, RowFuture]]] = {}
        """view key prefix -> (view, entity -> future) of the window being gathered."""
        self._on_the_way: dict[str, RowFuture] = {}
        """full key -> future of every key waiting or in a round trip (coalescing)."""
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def fetch(self, view: FeatureView, entities: list[str]) -> list[RowFuture]:
        """One future per entity, resolved with its row (or None: absent) or failed with
        FeatureStoreUnavailable / FeatureValueInvalid."""
        loop = asyncio.get_running_loop()
        prefix = view.key_prefix
        futures: list[RowFuture] = []
        batch: dict[str, RowFuture] | None = None
        for entity in entities:
            key = prefix + entity
            future = self._on_the_way.get(key)
            if future is None:
                future = loop.create_future()
                self._on_the_way[key] = future
                if batch is None:
                    batch = self._waiting.setdefault(prefix, (view, {}))[1]
                batch[entity] = future
            futures.append(future)
        if batch is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            if self._window_s > 0:
                loop.call_later(self._window_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return futures

    def _flush(self) -> None:
        self._flush_scheduled = False
        waiting, self._waiting = self._waiting, {}
        for view, batch in waiting.values():
            task = asyncio.ensure_future(self._round_trip(view, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _round_trip(self, view: FeatureView, batch: dict[str, RowFuture]) -> None:
        entities = list(batch)
        try:
            probe = self._breaker.check(self._store.describe())
        except FeatureStoreUnavailable as exc:
            self._refused.inc()
            self._fail(view, batch, exc)
            return
        started = time.perf_counter()
        try:
            rows = await self._store.get_many(entities, view)
        except FeatureStoreUnavailable as exc:
            self._breaker.failed(probe, exc.message)
            self._errors.inc()
            logger.warning("%s", exc.message)
            self._fail(view, batch, exc)
            return
        except BaseException as exc:  # a bug or cancellation: never leave a waiter hanging
            self._breaker.failed(probe, repr(exc))
            self._errors.inc()
            self._fail(view, batch, FeatureStoreUnavailable(f"feature lookup failed: {exc!r}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            logger.exception("feature lookup failed")
            return
        self._breaker.succeeded(probe)
        self._duration.observe(time.perf_counter() - started)
        self._keys.observe(len(entities))
        prefix = view.key_prefix
        for entity, row in zip(entities, rows):
            key = prefix + entity
            future = batch[entity]
            del self._on_the_way[key]
            if isinstance(row, FeatureValueInvalid):
                _settle(future, row)
                continue
            self._cache.put(key, row)
            if not future.done():
                future.set_result(row)

    def _fail(self, view: FeatureView, batch: dict[str, RowFuture], exc: Exception) -> None:
        prefix = view.key_prefix
        for entity, future in batch.items():
            self._on_the_way.pop(prefix + entity, None)
            _settle(future, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(future: RowFuture, exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
        # Callers that stopped waiting (client gone) must not leave "never retrieved" warnings.
        future.add_done_callback(_retrieve)


def _retrieve(future: RowFuture) -> None:
    if not future.cancelled():
        future.exception()
