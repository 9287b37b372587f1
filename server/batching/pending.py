"""One request waiting in a version's batcher queue: its rows, its own future, its clock.

Ray Serve's `_SingleRequest` shape: the future travels with the request, so the batcher
needs no id -> future side table and fans results straight back.
"""

from __future__ import annotations

import asyncio

import numpy as np


class PendingRequest:
    """Rows of one caller (or one chunk of a split caller) on their way to a batch."""

    __slots__ = ("inputs", "rows", "future", "enqueued_at", "deadline", "timer", "queued")

    def __init__(
        self,
        inputs: dict[str, np.ndarray],
        rows: int,
        future: asyncio.Future[dict[str, np.ndarray]],
        enqueued_at: float,
        deadline: float | None,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.enqueued_at = enqueued_at
        """`time.monotonic()` when admitted."""
        self.deadline = deadline
        """Absolute `time.monotonic()` after which the request must not run; None: none."""
        self.timer: asyncio.TimerHandle | None = None
        """Fires at the deadline to answer the caller while it still waits in the queue."""
        self.queued = True
        """True until the request leaves the queue (dispatched, expired or abandoned)."""
