"""One request waiting in a version's batcher queue: its rows, its own future, its clock.

Ray Serve's `_SingleRequest` shape: the future travels with the request, so the batcher
needs no id -> future side table and fans results straight back.
"""

from __future__ import annotations

import asyncio

from server.request import InferenceRequest, Tensors


class PendingRequest:
    """Rows of one caller (or one chunk of a split caller) on their way to a batch."""

    __slots__ = ("request", "inputs", "rows", "future", "enqueued_at", "deadline", "timer", "queued")

    def __init__(self, request: InferenceRequest, future: asyncio.Future[Tensors], enqueued_at: float) -> None:
        self.request = request
        # Copied out of the request: the batcher reads these on every decision.
        self.inputs = request.inputs
        self.rows = request.rows
        self.deadline = request.deadline
        """Absolute `time.monotonic()` after which the request must not run; None: none."""
        self.future = future
        self.enqueued_at = enqueued_at
        """`time.monotonic()` when admitted."""
        self.timer: asyncio.TimerHandle | None = None
        """Fires at the deadline to answer the caller while it still waits in the queue."""
        self.queued = True
        """True until the request leaves the queue (dispatched, expired or abandoned)."""
