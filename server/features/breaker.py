"""`CircuitBreaker`: fail feature lookups at once while the store is down, probe, close by itself.

Closed: round trips run; `failures` consecutive failed ones open it. Open: lookups that need
the store fail at once (no connection attempt, no timeout to wait out) until `reset_s` has
passed; then one round trip is let through as a probe (half-open) while the others keep
failing fast. A successful probe closes it, a failed one opens it again for `reset_s`.
Counted per round trip, not per request: 64 requests sharing one failed round trip are one
failure. Time comes from an injectable monotonic clock so tests drive it without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from server.errors import FeatureStoreUnavailable


class BreakerState(IntEnum):
    """Also the value of the `hotserve_feature_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        reset_s: float,
        on_change: Callable[[BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._on_change = on_change
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self.last_error = ""

    def check(self, where: str) -> bool:
        """Whether a round trip may run now; True marks it as the probe when half-open.

        Raises FeatureStoreUnavailable (naming `where` and the last error) when it may not.
        """
        if self.state is BreakerState.CLOSED:
            return False
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            self._set(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        retry_in = max(0.0, self.reset_s - (self._clock() - self._opened_at))
        raise FeatureStoreUnavailable(
            f"feature store {where} unavailable: circuit open after {self.failures} failed lookups "
            f"(last: {self.last_error}); next probe in {retry_in:.1f} s"
        )

    def succeeded(self, probe: bool) -> None:
        self._consecutive = 0
        if probe:
            self._probing = False
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failed(self, probe: bool, error: str) -> None:
        self.last_error = error
        self._consecutive += 1
        if probe:
            self._probing = False
        if probe or (self.state is BreakerState.CLOSED and self._consecutive >= self.failures):
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)
