"""Request deadline: Triton's `timeout` parameter (microseconds) or `Hotserve-Timeout-Ms`.

Both are durations from arrival; the result is an absolute `time.monotonic()` value.
When both are given, the sooner wins; with neither, the version's default timeout
(`batching.default_timeout_ms`) counts from arrival too. Computed once, at the edge.
"""

from __future__ import annotations

import math

from server.errors import InvalidInput

TIMEOUT_HEADER = "hotserve-timeout-ms"


def deadline_from(
    arrived: float, timeout_us: int | None, header_ms: str | None, default_timeout_s: float | None = None
) -> float | None:
    """Absolute deadline for a request that arrived at `arrived` (monotonic), or None."""
    timeouts_s: list[float] = []
    if timeout_us:
        timeouts_s.append(timeout_us / 1_000_000)
    if header_ms is not None:
        try:
            value = float(header_ms)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise InvalidInput("Hotserve-Timeout-Ms", expected="a positive number of milliseconds", got=repr(header_ms))
        timeouts_s.append(value / 1000)
    if timeouts_s:
        return arrived + min(timeouts_s)
    return None if default_timeout_s is None else arrived + default_timeout_s
