"""Inference requests in progress and the draining flag that graceful shutdown turns on.

`hotserve serve` flips `draining` on SIGTERM (readiness false, new inference 503),
then waits here until every accepted request has answered before closing sockets. The data
plane (`Call.route`, `Call.release`) counts requests in and out, whatever their transport.
"""

from __future__ import annotations

import asyncio
import time

from server.metrics.instruments import Metrics


class InflightRequests:
    """Counts requests between admission and response; lives on the event loop only."""

    def __init__(self, metrics: Metrics) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Read at scrape time: the hot path pays no lock for it.
        metrics.inflight_requests.set_function(lambda: self._count)
        self.draining = False
        """Set once shutdown began: no new inference is admitted."""
        self._drain_deadline: float | None = None

    @property
    def count(self) -> int:
        return self._count

    def begin_drain(self, grace_s: float) -> None:
        """Refuse new requests from now on; the whole shutdown has `grace_s` from here."""
        if not self.draining:
            self.draining = True
            self._drain_deadline = time.monotonic() + grace_s

    def grace_left(self, grace_s: float) -> float:
        """Seconds of the shutdown grace not yet used by draining (all of it if no drain ran)."""
        if self._drain_deadline is None:
            return grace_s
        return max(0.0, self._drain_deadline - time.monotonic())

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def exit(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in progress; False if `timeout_s` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
