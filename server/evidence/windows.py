"""`EvidenceWindows`: the fixed time buckets evidence is kept in, and how a query maps onto them.

Buckets are `bucket_s` wide and aligned on the epoch (bucket k covers [k * bucket_s, (k + 1) *
bucket_s) in wall-clock seconds), so every replica's buckets line up and the same window means
the same buckets on each. Each load keeps the last `buckets` of them: older evidence is gone.
A query's [since, until] widens to whole buckets; a candidate and its baseline are always
summed over the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.settings import Settings


@dataclass(frozen=True, slots=True)
class EvidenceWindows:
    """Width and number of the buckets each load keeps (`HOTSERVE_EVIDENCE_*`)."""

    bucket_s: float = 10.0
    buckets: int = 360

    def __post_init__(self) -> None:
        if self.bucket_s <= 0 or self.buckets < 1:
            raise ValueError(f"evidence buckets of {self.bucket_s} s x {self.buckets}: both must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> EvidenceWindows:
        return cls(
            settings.evidence_bucket_s, max(1, math.ceil(settings.evidence_window_s / settings.evidence_bucket_s))
        )

    def slot(self, at: float) -> int:
        """The bucket holding wall-clock time `at`."""
        return math.floor(at / self.bucket_s)

    def span(self, since: float | None, until: float | None, now: float) -> tuple[int, int]:
        """The first and last bucket of [since, until] (None: as far as kept / now), clipped to
        the buckets still kept at `now`; last < first when nothing of it is kept."""
        newest = self.slot(now)
        oldest = newest - self.buckets + 1
        first = oldest if since is None else max(oldest, self.slot(since))
        last = newest if until is None else min(newest, math.ceil(until / self.bucket_s) - 1)
        return first, max(last, first - 1)

    def interval(self, first: int, last: int) -> tuple[float, float]:
        """[since, until) in wall-clock seconds of buckets `first`..`last`."""
        return first * self.bucket_s, (last + 1) * self.bucket_s
