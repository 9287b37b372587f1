"""Request metrics (count by code, end-to-end latency) with labelled children cached; recorded
by `Call.finish`, where the data plane knows each request's outcome.

`labels()` checks and builds a key on every call; the hot path records two instruments per
request, so the children are looked up once per label set.
"""

from __future__ import annotations

from server.metrics.instruments import Metrics
from server.metrics.unlocked import CounterChild, HistogramChild


class RequestMetrics:
    """Records one answered inference request; label sets are bounded by resolved models."""

    def __init__(self, metrics: Metrics) -> None:
        self._requests = metrics.requests
        self._duration = metrics.request_duration
        self._counters: dict[tuple[str, str, str, int], CounterChild] = {}
        self._histograms: dict[tuple[str, str, str], HistogramChild] = {}

    def record(self, model: str, version: str, protocol: str, code: int, duration_s: float) -> None:
        counter = self._counters.get((model, version, protocol, code))
        if counter is None:
            counter = self._requests.labels(model, version, protocol, str(code))
            self._counters[(model, version, protocol, code)] = counter
        counter.inc()
        histogram = self._histograms.get((model, version, protocol))
        if histogram is None:
            histogram = self._duration.labels(model, version, protocol)
            self._histograms[(model, version, protocol)] = histogram
        histogram.observe(duration_s)
