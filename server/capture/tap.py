"""`CaptureTap`: which answered requests are captured, and the hand-off to the writer (event loop).

A tap on the data plane after the answer, like the shadow copy: `Call.infer` asks `draws(model)`
(the model's share: its `capture` in the control state, set through the admin API and shared by
the fleet, else `capture_sample`), and once the primary answered, `capture()` queues a `Captured`
holding references to the request's tensors, its outputs and, when a shadow copy was sent, a slot
for the copy's answer. Nothing is converted here: a few attribute reads, one object, one deque
append (`CaptureWriter.submit`). When the writer's buffer is full the request's rows are dropped
and counted; the request itself is never slowed or failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from server.capture.captured import Captured
from server.capture.writer import CAPTURE, CaptureWriter
from server.metrics.instruments import Metrics
from server.metrics.unlocked import CounterChild
from server.registry.control_state import ControlSnapshot
from server.registry.served import ServedVersion
from server.request import InferenceRequest, Tensors

OVERHEAD_BYTES = 512
"""What the buffer bound counts per request beyond its tensors' bytes (the objects holding them)."""


class CaptureTap:
    """The capture decision and hand-off; off (draws nothing) without a writer."""

    def __init__(
        self,
        writer: CaptureWriter | None,
        metrics: Metrics,
        default_share: float = 1.0,
        applied: Callable[[], ControlSnapshot] | None = None,
    ) -> None:
        self.writer = writer
        self._metrics = metrics
        self.default_share = default_share
        """`capture_sample`: the share of a model without its own setting."""
        self._applied = applied
        """The control snapshot the registry applied (per-model shares); None: the default for all."""
        self._seen: ControlSnapshot | None = None
        self._shares: dict[str, float] = {}
        self._accepted: dict[str, CounterChild] = {}

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def share(self, model: str) -> float:
        """The share of `model`'s answered requests captured now."""
        if self.writer is None:
            return 0.0
        applied = self._applied
        if applied is not None:
            snapshot = applied()
            if snapshot is not self._seen:  # a new revision was applied: re-read the shares once
                self._shares = {
                    name: control.capture for name, control in snapshot.models.items() if control.capture is not None
                }
                self._seen = snapshot
        return self._shares.get(model, self.default_share)

    def draws(self, model: str) -> bool:
        """Whether this request of `model` is captured (drawn per request at the model's share)."""
        if self.writer is None:
            return False
        share = self.share(model)
        return share >= 1.0 or (share > 0.0 and random.random() < share)

    def capture(
        self,
        served: ServedVersion,
        protocol: str,
        request: InferenceRequest,
        outputs: Tensors,
        shadow_version: int | None = None,
        copy: asyncio.Future[Tensors] | asyncio.Future[Tensors | None] | None = None,
    ) -> None:
        """Queue an answered request `served` ran (and the shadow copy sent with it, if any)."""
        writer = self.writer
        if writer is None:
            return
        rows = request.rows
        if writer.closed or not writer.has_room():
            self._metrics.capture_dropped.labels(served.name, CAPTURE, "buffer_full").inc(rows)
            return
        nbytes = OVERHEAD_BYTES
        for tensor in request.inputs.values():
            nbytes += tensor.nbytes
        for tensor in outputs.values():
            nbytes += tensor.nbytes
        item = Captured(
            request.request_id, time.time(), served.manifest, protocol, request.inputs, outputs, rows, nbytes
        )
        if copy is not None and shadow_version is not None:
            item.shadow_sent(shadow_version)  # before the writer can see it
            copy.add_done_callback(item.shadow_done)
        writer.submit(item)
        accepted = self._accepted.get(served.name)
        if accepted is None:
            accepted = self._accepted[served.name] = self._metrics.capture_accepted.labels(served.name)
            # The model's drop series from its first capture on: a first drop is then an increase
            # that rate() and the HotserveCaptureDropping alert see, not a series born non-zero.
            self._metrics.capture_dropped.labels(served.name, CAPTURE, "buffer_full")
        accepted.inc(rows)
