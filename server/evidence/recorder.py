"""`EvidenceRecorder`: where guarded promotion (and releases) read what versions showed.

Control path, fed from the request path. Each load of a version records into its own
`LoadEvidence` (`open_load`, called when a `ServedVersion` is built), so a reload starts from zero
and a version's evidence never comes from the process's lifetime metrics. Queries sum time
buckets: a window of one version, or a candidate and its baseline over the same buckets, by
default from the candidate's load until now. `MemoryEvidenceRecorder` answers from this process;
an implementation over a store shared by replicas sums the same summaries across the fleet.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Protocol

from server.contract.manifest import ModelManifest
from server.evidence.load import LoadEvidence
from server.evidence.predictions import PredictionBins
from server.evidence.summary import Comparison, WindowSummary
from server.evidence.windows import EvidenceWindows


class EvidenceRecorder(Protocol):
    """Opens each load's recording and answers queries over time windows (epoch seconds)."""

    def open_load(self, manifest: ModelManifest) -> LoadEvidence:
        """Start recording a new load of `manifest`'s version; it replaces the previous load's
        evidence in queries."""
        ...

    async def summary(
        self, model: str, version: int, since: float | None = None, until: float | None = None
    ) -> WindowSummary:
        """What the current load of `version` showed over [since, until] (None: all kept / now)."""
        ...

    async def compare(
        self,
        model: str,
        candidate: int,
        baseline: int | None,
        since: float | None = None,
        until: float | None = None,
    ) -> Comparison:
        """`candidate` and `baseline` over the same window; `since` defaults to the candidate's load."""
        ...


class MemoryEvidenceRecorder:
    """The evidence of this process's loads, the latest load of each version."""

    def __init__(self, windows: EvidenceWindows | None = None, clock: Callable[[], float] = time.time) -> None:
        self.windows = windows or EvidenceWindows()
        self._clock = clock
        self._loads: dict[tuple[str, int], LoadEvidence] = {}

    def open_load(self, manifest: ModelManifest) -> LoadEvidence:
        load = LoadEvidence(
            manifest.name,
            manifest.version,
            uuid.uuid4().hex[:16],
            self.windows,
            PredictionBins.of(manifest),
            self._clock,
        )
        self._loads[(manifest.name, manifest.version)] = load
        return load

    async def summary(
        self, model: str, version: int, since: float | None = None, until: float | None = None
    ) -> WindowSummary:
        first, last = self.windows.span(since, until, self._clock())
        return self._summary(model, version, first, last)

    async def compare(
        self,
        model: str,
        candidate: int,
        baseline: int | None,
        since: float | None = None,
        until: float | None = None,
    ) -> Comparison:
        now = self._clock()
        if since is None:
            load = self._loads.get((model, candidate))
            since = now if load is None else load.loaded_at
        first, last = self.windows.span(since, until, now)
        window_since, window_until = self.windows.interval(first, last)
        return Comparison(
            since=window_since,
            until=window_until,
            candidate=self._summary(model, candidate, first, last),
            baseline=None if baseline is None else self._summary(model, baseline, first, last),
        )

    def loads(self) -> list[LoadEvidence]:
        """The current load of each version (what a release publishes for the fleet's sum)."""
        return list(self._loads.values())

    def _summary(self, model: str, version: int, first: int, last: int) -> WindowSummary:
        load = self._loads.get((model, version))
        if load is not None:
            return load.summary(first, last)
        since, until = self.windows.interval(first, last)
        return WindowSummary(model=model, version=version, since=since, until=until)
