"""`LoadEvidence`: what one load of a model version records, in time buckets (request path).

`ServedVersion` opens one when it is built, so a version unloaded and loaded again records into a
new, empty one. It is fed on the event loop only: the edge calls `answered` once per answered
request, the shadow runner `compared` / `dropped` / `failed`, the batcher `predicted` once per
batch; so it takes no lock. An answer costs a clock read, a division, a bisect, a dict lookup
(its protocol's status classes) and four list increments; a bucket is allocated when the clock
enters a new one, not per request.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Callable

from server.evidence.predictions import PredictionBins
from server.evidence.summary import (
    LATENCY_BOUNDS_S,
    AnswerClasses,
    CopyComparisons,
    LatencyHistogram,
    WindowSummary,
)
from server.evidence.windows import EvidenceWindows
from server.request import Tensors

log = logging.getLogger(__name__)

# A bucket's counters, in one flat list.
_REQUESTS = 0
_ERRORS = 1
_LATENCY = 2
_COMPARED = _LATENCY + len(LATENCY_BOUNDS_S) + 1
_AGREED = _COMPARED + 1
_DROPPED = _AGREED + 1
_FAILED = _DROPPED + 1
_PREDICTIONS = _FAILED + 1


class _Bucket:
    __slots__ = ("answers", "counts", "max_abs_difference", "slot")

    def __init__(self, slot: int, size: int) -> None:
        self.slot = slot
        self.counts = [0] * size
        self.max_abs_difference = 0.0
        self.answers: dict[str, list[int]] = {}
        """Protocol -> answers below 400, 4xx, 5xx."""


class LoadEvidence:
    """Requests (by protocol and status class), 5xx, latency, comparisons and predictions of
    one load, per time bucket."""

    def __init__(
        self,
        model: str,
        version: int,
        load_id: str,
        windows: EvidenceWindows,
        predictions: PredictionBins | None,
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self.version = version
        self.load_id = load_id
        """Unique to this load (across replicas too): summaries name the loads they sum."""
        self._clock = clock
        self.loaded_at = clock()
        self._windows = windows
        self._bucket_s = windows.bucket_s
        self._predictions = predictions
        self._predictions_broken = False
        self._size = _PREDICTIONS + (0 if predictions is None else predictions.slots)
        self._ring: deque[_Bucket] = deque(maxlen=windows.buckets)
        self._bucket = _Bucket(windows.slot(self.loaded_at), self._size)
        self._ring.append(self._bucket)
        self.predicted = None if predictions is None else self._predicted
        """The batcher's per-batch observer; None when model.json has no prediction reference."""

    # --- request path (on the loop) ---------------------------------------------------------

    def answered(self, status: int, duration_s: float, protocol: str = "") -> None:
        """One request routed to this load over `protocol` (the label metrics give it: `v1`,
        `v2`, `grpc`; "" unsaid) was answered with `status` after `duration_s`."""
        bucket = self._bucket
        slot = self._clock() // self._bucket_s
        if slot != bucket.slot:
            bucket = self._advance(slot)
        counts = bucket.counts
        counts[_REQUESTS] += 1
        if status >= 500:
            counts[_ERRORS] += 1
        classes = bucket.answers.get(protocol)
        if classes is None:
            classes = bucket.answers[protocol] = [0, 0, 0]
        classes[0 if status < 400 else 1 if status < 500 else 2] += 1
        counts[_LATENCY + bisect_left(LATENCY_BOUNDS_S, duration_s)] += 1

    def compared(self, agreed: bool, difference: float) -> None:
        """A shadow copy was answered and compared with the primary's answer."""
        bucket = self._current()
        bucket.counts[_COMPARED] += 1
        if agreed:
            bucket.counts[_AGREED] += 1
        if difference > bucket.max_abs_difference:
            bucket.max_abs_difference = difference

    def dropped(self) -> None:
        """A shadow copy was not run (too many in flight, or this version's queue full)."""
        self._current().counts[_DROPPED] += 1

    def failed(self) -> None:
        """A shadow copy failed on this version."""
        self._current().counts[_FAILED] += 1

    def _predicted(self, inputs: Tensors, outputs: Tensors) -> None:
        predictions = self._predictions
        prediction = None if predictions is None or self._predictions_broken else outputs.get(predictions.output)
        if predictions is None or prediction is None:
            return
        try:
            predictions.count(prediction, self._current().counts, _PREDICTIONS)
        except Exception:  # never let evidence fail a batch: say so once, count no more predictions
            self._predictions_broken = True
            log.exception(
                "model %r version %d: counting predictions failed; no more are counted", self.model, self.version
            )

    def _current(self) -> _Bucket:
        slot = self._clock() // self._bucket_s
        return self._bucket if slot == self._bucket.slot else self._advance(slot)

    def _advance(self, slot: float) -> _Bucket:
        if slot < self._bucket.slot:
            return self._bucket  # the wall clock stepped back: count in the newest bucket
        self._bucket = _Bucket(int(slot), self._size)
        self._ring.append(self._bucket)  # the oldest falls out of the ring
        return self._bucket

    # --- control path -----------------------------------------------------------------------

    def summary(self, first: int | None = None, last: int | None = None) -> WindowSummary:
        """The sum of buckets `first`..`last` (see `EvidenceWindows.span`); by default all kept."""
        if first is None or last is None:
            first, last = self._windows.span(None, None, self._clock())
        totals = [0] * self._size
        max_abs_difference = 0.0
        answers: dict[str, list[int]] = {}
        for bucket in self._ring:
            if first <= bucket.slot <= last:
                totals = [a + b for a, b in zip(totals, bucket.counts, strict=True)]
                max_abs_difference = max(max_abs_difference, bucket.max_abs_difference)
                for protocol, classes in bucket.answers.items():
                    summed = answers.setdefault(protocol, [0, 0, 0])
                    for index, count in enumerate(classes):
                        summed[index] += count
        since, until = self._windows.interval(first, last)
        return WindowSummary(
            model=self.model,
            version=self.version,
            since=since,
            until=until,
            loads=(self.load_id,),
            requests=totals[_REQUESTS],
            errors=totals[_ERRORS],
            by_protocol={
                protocol: AnswerClasses(ok=ok, client_errors=client, server_errors=server)
                for protocol, (ok, client, server) in sorted(answers.items())
            },
            latency=LatencyHistogram(counts=tuple(totals[_LATENCY:_COMPARED])),
            comparisons=CopyComparisons(
                compared=totals[_COMPARED],
                agreed=totals[_AGREED],
                dropped=totals[_DROPPED],
                failed=totals[_FAILED],
                max_abs_difference=max_abs_difference,
            ),
            predictions=None if self._predictions is None else self._predictions.histogram(totals, _PREDICTIONS),
        )
