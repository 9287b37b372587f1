"""Shadow traffic: a copy of a request runs on the shadow version after the primary answered.

The edge offers a copy once the primary's answer is ready (`ShadowRunner.offer`, a few
microseconds, never awaited by the request): the copy goes to the shadow version's own
batcher (so copies are batched like any traffic) as one of at most `max_pending` copies in
flight, so the shadow never delays, fails or changes the primary's answer. Beyond that bound,
or when the shadow's own queue is full, the copy is dropped and counted; so it is, by default,
while the primary has requests waiting, and while the shadow took more than its ceiling of the
pair's inference time over the last second: copies use capacity the primary does not need. Each
answer is compared with the primary's by the route's `Agreement` (resolved when the routing
table is built, `server/routing/agreement.py`): the same decision at the decision threshold, the
same label, or every value within a tolerance. Outcomes, agreement, differences and shadow
latency are metrics, and each outcome is recorded in the evidence of the shadow version's load
(`ServedVersion.evidence`) for guarded promotion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from weakref import WeakKeyDictionary

import numpy as np

from server.contract.manifest import DEFAULT_DECISION_THRESHOLD
from server.errors import Overloaded
from server.metrics.instruments import Metrics
from server.registry.served import ServedVersion
from server.request import InferenceRequest, Tensors
from server.routing.agreement import Agreement
from server.routing.table import ShadowRoute

log = logging.getLogger(__name__)


_NUMERIC = "fiub"
"""dtype kinds compared as numbers (text outputs must be equal)."""


def agrees(primary: Tensors, shadow: Tensors, rule: Agreement) -> tuple[bool, float]:
    """(agreement, largest absolute difference) of the compared outputs: `rule.output`, or every
    output the primary answered. An output the shadow lacks, or answers in another shape,
    disagrees with an infinite difference; so do text outputs that differ."""
    names = list(primary) if rule.output is None else [rule.output]
    largest = 0.0
    agreed = True
    for name in names:
        expected, got = primary.get(name), shadow.get(name)
        if expected is None or got is None or got.shape != expected.shape:
            return False, float("inf")
        if expected.dtype.kind not in _NUMERIC or got.dtype.kind not in _NUMERIC:
            if not np.array_equal(expected, got):
                return False, float("inf")
            continue
        difference = _largest_difference(expected, got)
        largest = max(largest, difference)
        if rule.kind == "label":
            agreed &= _same_labels(expected, got)
        elif rule.kind == "decision":
            if expected.dtype.kind == "f" or rule.output is not None:
                agreed &= _same_decisions(expected, got, rule)
        else:
            agreed &= difference <= rule.tolerance
    return agreed, largest


_PYTHON_VALUES_MAX = 32
"""Outputs of up to this many values are compared in Python: 2.2 against 4.3 us for the demo's one
value through numpy's casts, subtraction, abs and max."""


def _largest_difference(expected: np.ndarray, got: np.ndarray) -> float:
    if expected.size <= _PYTHON_VALUES_MAX:
        diffs = [abs(float(a) - float(b)) for a, b in zip(expected.ravel().tolist(), got.ravel().tolist())]
        numbers = [d for d in diffs if d == d]  # NaN is the one value unequal to itself
        if len(numbers) == len(diffs):
            return max(diffs, default=0.0)
        return max(numbers) if numbers else float("inf")
    diff = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    if not diff.size:
        return 0.0
    largest = float(np.max(diff))
    if largest == largest:  # no NaN: the common case, one reduction
        return largest
    return float("inf") if np.isnan(diff).all() else float(np.nanmax(diff))


def _rows(values: np.ndarray) -> np.ndarray:
    """`values` as [rows, values per row] (a scalar is one row of one)."""
    return values.reshape(values.shape[0] if values.ndim else 1, -1)


def _same_decisions(expected: np.ndarray, got: np.ndarray, rule: Agreement) -> bool:
    """Each side's decision at its own threshold, row by row. Two columns are a binary
    classifier's class scores: the second (the positive class) decides."""
    primary_scores, shadow_scores = _rows(expected), _rows(got)
    if primary_scores.shape[1] == 2:
        primary_scores, shadow_scores = primary_scores[:, 1:], shadow_scores[:, 1:]
    threshold = rule.threshold if rule.threshold is not None else DEFAULT_DECISION_THRESHOLD
    shadow_threshold = rule.shadow_threshold if rule.shadow_threshold is not None else threshold
    return bool(np.array_equal(primary_scores >= threshold, shadow_scores >= shadow_threshold))


def _same_labels(expected: np.ndarray, got: np.ndarray) -> bool:
    """The same class per row: the argmax of one score per class, or the label itself."""
    primary_rows, shadow_rows = _rows(expected), _rows(got)
    if primary_rows.shape[1] > 1 and expected.dtype.kind == "f":
        return bool(np.array_equal(primary_rows.argmax(axis=1), shadow_rows.argmax(axis=1)))
    return bool(np.array_equal(expected, got))


SHARE_WINDOW_S = 1.0
"""How often the shadow's share of inference time is measured (over the window just ended)."""


class _Lease:
    """One lease on a shadow version, returned exactly once."""

    def __init__(self, served: ServedVersion) -> None:
        self._served: ServedVersion | None = served
        served.lease()

    def release(self) -> None:
        if self._served is not None:
            self._served.release()
            self._served = None


class _InferenceShare:
    """The shadow's share of one primary-and-shadow pair's inference time (their batches' run
    time on workers), measured over windows of SHARE_WINDOW_S and kept until the next one ends.
    Holds numbers only: the versions are the keys it is found by, held weakly."""

    def __init__(self, primary_busy_s: float, shadow_busy_s: float, now: float) -> None:
        self._mark = (now, primary_busy_s, shadow_busy_s)
        self._share = 0.0

    def measure(self, now: float, primary_busy_s: float, shadow_busy_s: float) -> float:
        since, primary_s, shadow_s = self._mark
        if now - since >= SHARE_WINDOW_S:
            spent = (primary_busy_s - primary_s) + (shadow_busy_s - shadow_s)
            self._share = (shadow_busy_s - shadow_s) / spent if spent > 0 else 0.0
            self._mark = (now, primary_busy_s, shadow_busy_s)
        return self._share


class _ShadowMetrics:
    """One shadow version's metric children, looked up once (`labels()` costs a lock and a key)."""

    def __init__(self, metrics: Metrics, served: ServedVersion) -> None:
        labels = (served.name, str(served.version))
        self.compared = metrics.shadow_requests.labels(*labels, "compared")
        self.dropped = metrics.shadow_requests.labels(*labels, "dropped")
        self.failed = metrics.shadow_requests.labels(*labels, "failed")
        self.agree = metrics.shadow_agreements.labels(*labels, "agree")
        self.disagree = metrics.shadow_agreements.labels(*labels, "disagree")
        self.duration = metrics.shadow_duration.labels(*labels)
        self.difference = metrics.shadow_abs_difference.labels(*labels)


class ShadowRunner:
    """Runs shadow copies off the request path: bounded in flight, compared, recorded."""

    def __init__(
        self,
        metrics: Metrics,
        max_pending: int = 256,
        yield_to_primary: bool = True,
        max_inference_share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._max_pending = max_pending
        self._yield = yield_to_primary
        self._max_share = max_inference_share
        self._clock = clock
        # shadow -> primary -> share; an unloaded version's entries go with it.
        self._shares: WeakKeyDictionary[ServedVersion, WeakKeyDictionary[ServedVersion, _InferenceShare]] = (
            WeakKeyDictionary()
        )
        self._children: WeakKeyDictionary[ServedVersion, _ShadowMetrics] = WeakKeyDictionary()
        self._pending: set[asyncio.Future[Tensors] | asyncio.Task[Tensors | None]] = set()
        """Copies in flight: each the shadow batcher's future of its answer (a task only for a
        copy that must be split into several batches)."""
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

    def offer(
        self, route: ShadowRoute, request: InferenceRequest, primary: Tensors, answered_by: ServedVersion | None = None
    ) -> asyncio.Future[Tensors] | asyncio.Task[Tensors | None] | None:
        """Send a copy of a request `answered_by` answered to the shadow version, or drop it (and
        count it): when too many are in flight, or, yielding to the primary, when the primary has
        requests waiting or a full batch of copies already waits for the shadow. Returns the copy's
        answer to come (the capture tap keeps it with the primary's; a task's result is None when
        the copy failed), or None when no copy was sent."""
        served = route.served
        if self._closed or len(self._pending) >= self._max_pending or self._busy(answered_by, served):
            self._drop(served)
            return None
        # The copy has no deadline of its own: the client already has its answer.
        copy = request._replace(deadline=None)
        lease = _Lease(served)  # held until the copy ran: a swap cannot unload it under the copy
        pending: asyncio.Future[Tensors] | asyncio.Task[Tensors | None]
        if copy.rows > served.manifest.batching.max_batch_size:
            pending = asyncio.get_running_loop().create_task(self._run(route, copy, primary))
        else:
            try:  # no task per copy: the batcher's future, and a callback when it is answered
                pending = served.batcher.submit_nowait(copy)
            except Exception as error:
                lease.release()
                self._refused(served, error)
                return None
            pending.add_done_callback(partial(self._answered, route, primary, time.monotonic()))
        self._pending.add(pending)

        def ended(done: asyncio.Future[Tensors] | asyncio.Task[Tensors | None]) -> None:
            # Also for a copy cancelled before it ran (close).
            self._pending.discard(done)
            lease.release()

        pending.add_done_callback(ended)
        return pending

    def _busy(self, primary: ServedVersion | None, shadow: ServedVersion) -> bool:
        """Copies run on capacity the primary does not need: none while a request waits for the
        primary (it would compete with it for the same cores), no backlog beyond one batch, and
        none while the shadow took more than its ceiling of the pair's recent inference time."""
        if self._yield and (
            (primary is not None and primary.batcher.queued > 0)
            or shadow.batcher.queued >= shadow.manifest.batching.max_batch_size
        ):
            return True  # checked first: two attribute reads, where the share needs a clock
        return primary is not None and self._over_share(primary, shadow)

    def declines(self, route: ShadowRoute, primary: ServedVersion | None) -> bool:
        """True (and the copy counted as dropped) when a request routed now to `primary` would
        have its copy dropped anyway: the data plane then takes no shadow lease and offers no
        copy. Under saturation that is most requests, and each pays nothing more for the shadow.
        `offer` decides again once the primary answered."""
        served = route.served
        if self._closed or len(self._pending) >= self._max_pending or self._busy(primary, served):
            self._drop(served)
            return True
        return False

    def _over_share(self, primary: ServedVersion, shadow: ServedVersion) -> bool:
        if self._max_share >= 1.0:
            return False
        primary_s, shadow_s, now = primary.batcher.busy_s, shadow.batcher.busy_s, self._clock()
        pairs = self._shares.setdefault(shadow, WeakKeyDictionary())
        share = pairs.get(primary)
        if share is None:
            share = pairs[primary] = _InferenceShare(primary_s, shadow_s, now)
        return share.measure(now, primary_s, shadow_s) > self._max_share

    def _metrics_of(self, served: ServedVersion) -> _ShadowMetrics:
        children = self._children.get(served)
        if children is None:
            children = self._children[served] = _ShadowMetrics(self._metrics, served)
        return children

    def _drop(self, served: ServedVersion) -> None:
        served.evidence.dropped()
        self._metrics_of(served).dropped.inc()

    def _refused(self, served: ServedVersion, error: BaseException) -> None:
        """A copy the shadow did not answer: dropped when its queue was full, else failed."""
        if isinstance(error, Overloaded):
            self._drop(served)
            return
        served.evidence.failed()
        self._metrics_of(served).failed.inc()
        log.debug("shadow %r version %d failed: %s", served.name, served.version, error)

    def _answered(self, route: ShadowRoute, primary: Tensors, started: float, done: asyncio.Future[Tensors]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self._refused(route.served, error)
            return
        self._compare(route, primary, done.result(), started)

    def _compare(self, route: ShadowRoute, primary: Tensors, outputs: Tensors, started: float) -> None:
        served = route.served
        children = self._metrics_of(served)
        children.duration.observe(time.monotonic() - started)
        agreed, largest = agrees(primary, outputs, route.agreement)
        served.evidence.compared(agreed, largest)
        children.compared.inc()
        (children.agree if agreed else children.disagree).inc()
        children.difference.observe(largest)

    async def _run(self, route: ShadowRoute, copy: InferenceRequest, primary: Tensors) -> Tensors | None:
        """A copy larger than one batch: split by the batcher's `submit`; its outputs, None if it failed."""
        started = time.monotonic()
        try:
            outputs = await route.served.infer(copy)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._refused(route.served, error)
            return None
        self._compare(route, primary, outputs, started)
        return outputs
