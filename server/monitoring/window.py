"""`SampleWindow`: the bounded ring a version's batches are sampled into (written on the request path).

The batcher's completion callback appends a whole batch with a few slice copies (no per-row
Python); the drift computation, on a worker thread, takes a copy of the rows (oldest first) under
the same lock. Memory is fixed: `capacity` rows of `width` float64 columns and one timestamp each.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np


class SampleWindow:
    """The last `capacity` rows appended, each `width` values wide, with the time it was appended."""

    def __init__(self, capacity: int, width: int) -> None:
        if capacity < 1 or width < 1:
            raise ValueError(f"capacity and width must be positive, got {capacity}, {width}")
        self.capacity = capacity
        self.width = width
        self._values = np.empty((capacity, width), dtype=np.float64)
        self._times = np.empty(capacity, dtype=np.float64)
        self._next = 0
        """Row the next append writes first."""
        self._filled = 0
        self._appended = 0
        self._lock = threading.Lock()

    @property
    def appended(self) -> int:
        """Rows appended since the window was made (including those since overwritten)."""
        return self._appended

    def append(self, parts: Sequence[np.ndarray], now: float) -> None:
        """Append `rows` rows made of `parts` side by side ([rows, k] arrays whose k sum to `width`)."""
        rows = int(parts[0].shape[0])
        if rows == 0:
            return
        skip = max(0, rows - self.capacity)  # a batch larger than the window keeps its last rows
        with self._lock:
            start = self._next
            first = min(rows - skip, self.capacity - start)
            spans = ((start, skip, first), (0, skip + first, rows - skip - first))
            for at, source, count in spans:
                if count == 0:
                    continue
                column = 0
                for part in parts:
                    width = part.shape[1]
                    self._values[at : at + count, column : column + width] = part[source : source + count]
                    column += width
                self._times[at : at + count] = now
            self._next = (start + rows - skip) % self.capacity
            self._filled = min(self.capacity, self._filled + rows - skip)
            self._appended += rows

    def snapshot(self, since: float | None = None) -> np.ndarray:
        """A copy of the rows in the window, oldest first; only those appended at or after `since`."""
        with self._lock:  # a plain copy under the lock: the request path waits on it
            filled, start = self._filled, self._next
            values = self._values[:filled].copy()
            times = self._times[:filled].copy()
        if filled == self.capacity and start:
            values = np.roll(values, -start, axis=0)
            times = np.roll(times, -start)
        if since is not None:
            values = values[times >= since]
        return values
