"""Shadow traffic: a copy of a request runs on the shadow version after the primary answered.

The edge offers a copy once the primary's answer is ready (`ShadowRunner.offer`, a few
microseconds, never awaited by the request): the copy waits in a bounded queue and a fixed
number of worker tasks run it through the shadow version's own batcher, so the shadow never
delays, fails or changes the primary's answer. A full queue drops the copy and counts it. Each
answer is compared with the primary's: it agrees when every output's largest absolute
difference is within the shadow's tolerance, or, with a decision threshold, when both answers
fall on the same side of it row by row. Outcomes, agreement, differences and shadow latency
are metrics, and `evidence()` sums them per version for guarded promotion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from server.metrics.instruments import Metrics
from server.request import InferenceRequest, Tensors
from server.routing.table import ShadowRoute

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ShadowEvidence:
    """What shadow copies of one version have shown on this replica since it loaded."""

    compared: int = 0
    agreed: int = 0
    dropped: int = 0
    failed: int = 0
    max_abs_difference: float = 0.0

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass(slots=True)
class _Copy:
    route: ShadowRoute
    request: InferenceRequest
    primary: Tensors


def agrees(primary: Tensors, shadow: Tensors, tolerance: float,
           threshold: float | None) -> tuple[bool, float]:
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


class ShadowRunner:
    """Runs shadow copies off the request path: bounded queue, fixed workers, compare, record."""

    def __init__(self, metrics: Metrics, max_queue: int = 256, workers: int = 2) -> None:
        self._metrics = metrics
        self._max_queue = max_queue
        self._queue: deque[_Copy] = deque()
        self._wakeup = asyncio.Event()
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._evidence: dict[tuple[str, int], ShadowEvidence] = {}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"hotserve-shadow-{i}")
                       for i in range(self._workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._queue:
            self._queue.popleft().route.served.release()

    def evidence(self, model: str, version: int) -> ShadowEvidence:
        return self._evidence.setdefault((model, version), ShadowEvidence())

    def offer(self, route: ShadowRoute, request: InferenceRequest, primary: Tensors) -> None:
        """Queue a copy of an answered request for the shadow version, or drop it if the queue is full."""
        served = route.served
        if len(self._queue) >= self._max_queue:
            self.evidence(served.name, served.version).dropped += 1
            self._metrics.shadow_requests.labels(served.name, str(served.version), "dropped").inc()
            return
        served.lease()  # held until the copy ran: a swap cannot unload it under the copy
        self._queue.append(_Copy(route, request, primary))
        self._wakeup.set()

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            copy = self._queue.popleft()
            try:
                await self._run(copy)
            finally:
                copy.route.served.release()

    async def _run(self, copy: _Copy) -> None:
        served = copy.route.served
        labels = (served.name, str(served.version))
        evidence = self.evidence(served.name, served.version)
        # The copy has no deadline of its own: the client already has its answer.
        request = copy.request._replace(deadline=None)
        started = time.monotonic()
        try:
            outputs = await served.infer(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            evidence.failed += 1
            self._metrics.shadow_requests.labels(*labels, "failed").inc()
            log.debug("shadow %r version %d failed: %s", served.name, served.version, error)
            return
        self._metrics.shadow_duration.labels(*labels).observe(time.monotonic() - started)
        agreed, largest = agrees(copy.primary, outputs, copy.route.tolerance, copy.route.threshold)
        evidence.compared += 1
        evidence.agreed += agreed
        evidence.max_abs_difference = max(evidence.max_abs_difference, largest)
        self._metrics.shadow_requests.labels(*labels, "compared").inc()
        self._metrics.shadow_agreements.labels(*labels, "agree" if agreed else "disagree").inc()
        self._metrics.shadow_abs_difference.labels(*labels).observe(largest)
