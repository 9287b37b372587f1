"""`FeatureLookup`: a request's entities -> their stored rows, through the local cache, the
gatherer (one round trip for concurrent requests) and the store, with staleness applied.

The join (`join.py`) asks it once per request for the distinct entities that need stored
values. Cache hits are answered without waiting on anything; misses wait for their share of
a gathered round trip. A row older than the view's `max_age_s` comes back as `Missing`, the
same as an absent entity; a failed or refused round trip as `Missing` carrying the error, so
the view decides between 503 and its defaults. A stored value that does not parse raises.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from server.contract.manifest import FeatureView
from server.errors import FeatureStoreUnavailable
from server.features.breaker import BreakerState, CircuitBreaker
from server.features.gather import LookupGatherer
from server.features.local_cache import ABSENT, LocalCache
from server.features.store import EntityRow, FeatureStore
from server.metrics.instruments import Metrics


@dataclass(frozen=True, slots=True)
class Missing:
    """No usable stored values for an entity, and why."""

    reason: str
    unavailable: FeatureStoreUnavailable | None = None
    """Set when the store could not answer (rather than answering "absent" or "too old")."""


NOT_STORED = Missing("no values stored")
EMPTY_STORE = Missing(
    "no values stored: the feature store holds no entity of this view at all. Fill the embedded store "
    "at start-up (HOTSERVE_FEATURE_TABLE=TABLE, or `hotserve serve --feature-table TABLE`; "
    "TABLE a CSV, Parquet or demo:fraud) or a running server's with "
    "`hotserve features materialize TABLE --server URL`"
)
"""An absent entity of a view the store holds nothing of: most likely a store nobody filled."""


class _ViewInstruments:
    """Metric children of one view, bound once (labels() costs a key and a dict lookup)."""

    def __init__(self, metrics: Metrics, view: FeatureView, backend: str) -> None:
        label = view.label
        self.local_hits = metrics.feature_hits.labels(label, "local")
        self.local_misses = metrics.feature_misses.labels(label, "local")
        self.store_hits = metrics.feature_hits.labels(label, backend)
        self.store_misses = metrics.feature_misses.labels(label, backend)
        self.duration = metrics.feature_lookup_duration.labels(label)
        self.staleness = metrics.feature_staleness.labels(label)
        self.results = {
            result: metrics.feature_lookups.labels(label, result)
            for result in ("ok", "defaults", "not_found", "unavailable", "invalid")
        }


class FeatureLookup:
    """The app-wide lookup path over one store; built by `features/service.py`."""

    def __init__(
        self,
        store: FeatureStore,
        metrics: Metrics,
        cache_size: int = 100_000,
        cache_ttl_s: float = 5.0,
        gather_window_s: float = 0.0,
        breaker_failures: int = 5,
        breaker_reset_s: float = 2.0,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self.cache = LocalCache(cache_size, cache_ttl_s)
        state = metrics.feature_breaker_state.labels(store.backend)
        state.set(BreakerState.CLOSED)
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s, on_change=state.set)
        self._gatherer = LookupGatherer(store, self.cache, self.breaker, gather_window_s, metrics)
        self._instruments: dict[str, _ViewInstruments] = {}

    def instruments(self, view: FeatureView) -> _ViewInstruments:
        found = self._instruments.get(view.label)
        if found is None:
            found = self._instruments[view.label] = _ViewInstruments(self._metrics, view, self.store.backend)
        return found

    async def rows(self, view: FeatureView, entities: list[str]) -> dict[str, EntityRow | Missing]:
        """Each distinct entity's fresh row, or why there is none. Raises FeatureValueInvalid."""
        started = time.perf_counter()
        meter = self.instruments(view)
        now = time.monotonic()
        prefix = view.key_prefix
        found: dict[str, Any] = {}
        misses: list[str] = []
        cache = self.cache
        for entity in entities:
            if entity in found:
                continue
            cached = cache.get(prefix + entity, now)
            if cached is None:
                misses.append(entity)
                found[entity] = None
            else:
                found[entity] = self._absent(view) if cached is ABSENT else cached
        hits = len(found) - len(misses)
        if hits:
            meter.local_hits.inc(hits)
        if misses:
            meter.local_misses.inc(len(misses))
            await self._from_store(view, misses, found, meter)
        self._apply_max_age(view, found, meter)
        meter.duration.observe(time.perf_counter() - started)
        return found

    async def _from_store(
        self, view: FeatureView, misses: list[str], found: dict[str, Any], meter: _ViewInstruments
    ) -> None:
        futures = self._gatherer.fetch(view, misses)
        # wait(), not gather(): a caller that goes away must not cancel futures others share.
        await asyncio.wait(futures)
        absent = 0
        for entity, future in zip(misses, futures):
            error = future.exception()
            if isinstance(error, FeatureStoreUnavailable):
                found[entity] = Missing("feature store unavailable", error)
            elif error is not None:
                raise error
            else:
                row = future.result()
                if row is None:
                    absent += 1
                    found[entity] = self._absent(view)
                else:
                    found[entity] = row
        answered = sum(1 for future in futures if future.exception() is None)
        if answered - absent:
            meter.store_hits.inc(answered - absent)
        if absent:
            meter.store_misses.inc(absent)

    def _absent(self, view: FeatureView) -> Missing:
        return EMPTY_STORE if self.store.is_empty(view) else NOT_STORED

    def _apply_max_age(self, view: FeatureView, found: dict[str, Any], meter: _ViewInstruments) -> None:
        wall = time.time()  # event times are wall-clock: staleness is too
        max_age_s = view.max_age_s
        for entity, row in found.items():
            if isinstance(row, EntityRow):
                age_s = wall - row.event_time
                meter.staleness.observe(max(0.0, age_s))
                if max_age_s is not None and age_s > max_age_s:
                    found[entity] = Missing(
                        f"values are {age_s:.0f} s old, older than the view's max_age_s of {max_age_s:g} s"
                    )

    async def close(self) -> None:
        await self._gatherer.close()
        await self.store.close()
