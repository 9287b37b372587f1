"""Shadow traffic: a copy of a request runs on the shadow version after the primary answered.

The edge offers a copy once the primary's answer is ready (`ShadowRunner.offer`, a few
microseconds, never awaited by the request): the copy goes to the shadow version's own
batcher (so copies are batched like any traffic) as one of at most `max_pending` copies in
flight, so the shadow never delays, fails or changes the primary's answer. Beyond that bound,
or when the shadow's own queue is full, the copy is dropped and counted. Each
answer is compared with the primary's: it agrees when every output's largest absolute
difference is within the shadow's tolerance, or, with a decision threshold, when both answers
fall on the same side of it row by row. Outcomes, agreement, differences and shadow latency
are metrics, and each outcome is recorded in the evidence of the shadow version's load
(`ServedVersion.evidence`) for guarded promotion.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from server.errors import Overloaded
from server.metrics.instruments import Metrics
from server.registry.served import ServedVersion
from server.request import InferenceRequest, Tensors
from server.routing.table import ShadowRoute

log = logging.getLogger(__name__)


def agrees(primary: Tensors, shadow: Tensors, tolerance: float, threshold: float | None) -> tuple[bool, float]:
    """(agreement, largest absolute difference) over the outputs both answers carry."""
    largest = 0.0
    same_decisions = True
    for name, expected in primary.items():
        got = shadow.get(name)
        if got is None or got.shape != expected.shape:
            return False, float("inf")
        if expected.dtype.kind not in "fiub":
            if not np.array_equal(expected, got):
                return False, float("inf")
            continue
        diff = np.abs(expected.astype(np.float64) - got.astype(np.float64))
        if diff.size:
            largest = max(largest, float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf"))
        if threshold is not None and expected.dtype.kind == "f":
            same_decisions &= bool(np.array_equal(expected >= threshold, got >= threshold))
    if threshold is not None:
        return same_decisions, largest
    return largest <= tolerance, largest


class _Lease:
    """One lease on a shadow version, returned exactly once."""

    def __init__(self, served: ServedVersion) -> None:
        self._served: ServedVersion | None = served
        served.lease()

    def release(self) -> None:
        if self._served is not None:
            self._served.release()
            self._served = None


class ShadowRunner:
    """Runs shadow copies off the request path: bounded in flight, compared, recorded."""

    def __init__(self, metrics: Metrics, max_pending: int = 256) -> None:
        self._metrics = metrics
        self._max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Stop taking copies; cancel those in flight (their leases are returned)."""
        self._closed = True
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Copies in flight now."""
        return len(self._pending)

    def offer(self, route: ShadowRoute, request: InferenceRequest, primary: Tensors) -> None:
        """Send a copy of an answered request to the shadow version, or drop it when too many are in flight."""
        served = route.served
        if self._closed or len(self._pending) >= self._max_pending:
            self._drop(served)
            return
        lease = _Lease(served)  # held until the copy ran: a swap cannot unload it under the copy
        task = asyncio.get_running_loop().create_task(self._run(route, request, primary, lease))
        self._pending.add(task)

        def ended(done: asyncio.Task[None]) -> None:
            # A copy cancelled before it started (close) never ran its body's `finally`.
            self._pending.discard(done)
            lease.release()

        task.add_done_callback(ended)

    def _drop(self, served: ServedVersion) -> None:
        served.evidence.dropped()
        self._metrics.shadow_requests.labels(served.name, str(served.version), "dropped").inc()

    async def _run(self, route: ShadowRoute, request: InferenceRequest, primary: Tensors, lease: _Lease) -> None:
        served = route.served
        labels = (served.name, str(served.version))
        # The copy has no deadline of its own: the client already has its answer.
        copy = request._replace(deadline=None)
        started = time.monotonic()
        try:
            outputs = await served.infer(copy)
        except Overloaded:
            self._drop(served)  # the shadow's own queue is full
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            served.evidence.failed()
            self._metrics.shadow_requests.labels(*labels, "failed").inc()
            log.debug("shadow %r version %d failed: %s", served.name, served.version, error)
            return
        finally:
            lease.release()
        self._metrics.shadow_duration.labels(*labels).observe(time.monotonic() - started)
        agreed, largest = agrees(primary, outputs, route.tolerance, route.threshold)
        served.evidence.compared(agreed, largest)
        self._metrics.shadow_requests.labels(*labels, "compared").inc()
        self._metrics.shadow_agreements.labels(*labels, "agree" if agreed else "disagree").inc()
        self._metrics.shadow_abs_difference.labels(*labels).observe(largest)
