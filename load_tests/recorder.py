"""The run's timeline: every request (start, scenario, latency, failed, version that answered) and
every operator action, so latency, throughput and version shares can be drawn over time and
failures counted inside the windows where production changed hands.

Fed by locust's `request` event (the scenarios put the answering version in the request's
context); read after the run as numpy arrays. Locust's own stats (CSV, HTML, the summary's
percentiles) are kept separately; this is what locust does not keep: per-request time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ROUTING_ACTIONS = ("promote", "rollback")
"""Operator actions that move `production`: the windows the promotion SLO watches."""


@dataclass
class Event:
    """One operator action as the operator saw it."""

    action: str
    started: float
    """Epoch seconds, like locust's request start times."""
    ended: float
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Window:
    """Requests started in [start, end): how many, their rate, latency and failures."""

    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class Series:
    """Per-bucket figures over the run (`t_s` from the first request)."""

    t_s: list[float] = field(default_factory=list)
    requests_per_s: list[float] = field(default_factory=list)
    failures_per_s: list[float] = field(default_factory=list)
    percentiles_ms: dict[str, list[float | None]] = field(default_factory=dict)
    version_share: dict[str, list[float]] = field(default_factory=dict)


class Recorder:
    """Collects the timeline; `on_request` is a locust `request` event listener."""

    def __init__(self) -> None:
        self._started: list[float] = []
        self._names: list[str] = []
        self._latency_ms: list[float] = []
        self._failed: list[bool] = []
        self._versions: list[str | None] = []
        self.events: list[Event] = []

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None = None,
        context: dict[str, Any] | None = None,
        start_time: float | None = None,
        **_kwargs: Any,
    ) -> None:
        self._started.append(start_time if start_time is not None else 0.0)
        self._names.append(name)
        self._latency_ms.append(response_time)
        self._failed.append(exception is not None)
        self._versions.append((context or {}).get("version"))

    def record_event(self, event: Event) -> None:
        self.events.append(event)

    # --- analysis ------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self._started)

    def _mask(self, names: list[str] | None, start: float | None = None, end: float | None = None) -> np.ndarray:
        started = np.asarray(self._started)
        mask = np.ones(len(started), dtype=bool)
        if names is not None:
            mask &= np.isin(np.asarray(self._names, dtype=object), names)
        if start is not None:
            mask &= started >= start
        if end is not None:
            mask &= started < end
        return mask

    def window(self, names: list[str] | None, start: float, end: float) -> Window:
        """Figures for the requests named `names` (None: all) that started in [start, end)."""
        mask = self._mask(names, start, end)
        latency = np.asarray(self._latency_ms)[mask]
        failed = np.asarray(self._failed, dtype=bool)[mask]
        span = max(end - start, 1e-9)
        return Window(
            requests=int(mask.sum()),
            failures=int(failed.sum()),
            requests_per_s=float(mask.sum()) / span,
            p50_ms=float(np.percentile(latency, 50)) if latency.size else None,
            p99_ms=float(np.percentile(latency, 99)) if latency.size else None,
        )

    def routing_windows(self, after_s: float) -> list[tuple[Event, float, float]]:
        """(event, start, end) for each action that moved production: from the call's start to
        `after_s` past its answer, so requests routed just before or after the swap are inside."""
        return [(e, e.started, e.ended + after_s) for e in self.events if e.action in ROUTING_ACTIONS]

    def failures_in(self, names: list[str], windows: list[tuple[Event, float, float]]) -> tuple[int, int]:
        """(requests, failures) among `names` started inside any of `windows` (each counted once)."""
        mask = np.zeros(self.count, dtype=bool)
        for _, start, end in windows:
            mask |= self._mask(names, start, end)
        return int(mask.sum()), int(np.asarray(self._failed, dtype=bool)[mask].sum())

    def first_request(self) -> float:
        return min(self._started) if self._started else 0.0

    def series(self, names: list[str], bucket_s: float = 1.0, percentiles: tuple[int, ...] = (50, 90, 99)) -> Series:
        """Rate, failures, latency percentiles and each version's share of answers per bucket."""
        out = Series(percentiles_ms={f"p{p}": [] for p in percentiles})
        mask = self._mask(names)
        if not mask.any():
            return out
        started = np.asarray(self._started)[mask]
        latency = np.asarray(self._latency_ms)[mask]
        failed = np.asarray(self._failed, dtype=bool)[mask]
        versions = [v for v, m in zip(self._versions, mask, strict=True) if m]
        origin = self.first_request()
        buckets = ((started - origin) // bucket_s).astype(int)
        every_version = sorted({v for v in versions if v is not None}, key=int)
        out.version_share = {v: [] for v in every_version}
        for bucket in range(int(buckets.max()) + 1):
            inside = buckets == bucket
            out.t_s.append(bucket * bucket_s)
            out.requests_per_s.append(float(inside.sum()) / bucket_s)
            out.failures_per_s.append(float(failed[inside].sum()) / bucket_s)
            for p in percentiles:
                out.percentiles_ms[f"p{p}"].append(float(np.percentile(latency[inside], p)) if inside.any() else None)
            answered = Counter(versions[i] for i in np.flatnonzero(inside) if versions[i] is not None)
            total = sum(answered.values())
            for version in every_version:
                out.version_share[version].append(answered[version] / total if total else 0.0)
        return out

    def versions_answered(self, names: list[str]) -> dict[str, int]:
        mask = self._mask(names)
        return dict(
            sorted(Counter(v for v, m in zip(self._versions, mask, strict=True) if m and v is not None).items())
        )
