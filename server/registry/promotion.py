"""Guarded promotion: the evidence a candidate version earned on this replica, and the verdict.

Control path. A `promote` may carry `PromotionRequirements`; the admin API gathers the
candidate's `Evidence` from what this replica already measures (no extra work on the request
path): canary traffic from the request counters and latency histogram of each version, shadow
traffic from the shadow runner's comparisons. Evidence that falls short refuses the promotion
(409, the evidence in the body) unless it is forced, which the audit log records.
"""

from __future__ import annotations

import math
from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field

from server.metrics.instruments import Metrics
from server.shadow import ShadowEvidence


class PromotionRequirements(BaseModel):
    """What a candidate must have shown before it may take `production`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_requests: int = Field(default=0, ge=0)
    """Canary requests answered plus shadow copies compared."""
    min_agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    """Share of compared shadow copies that agreed with production."""
    max_p99_ratio: float | None = Field(default=None, gt=0.0)
    """Candidate p99 latency over production's."""
    max_error_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    """Share of the candidate's answers that were server errors (5xx)."""


class VersionTraffic(BaseModel):
    requests: int
    errors: int
    p99_s: float | None


class Evidence(BaseModel):
    """What a candidate showed against the production version (on this replica, since load)."""

    candidate: VersionTraffic
    production: VersionTraffic | None
    shadow_compared: int
    shadow_agreement: float | None
    shadow_dropped: int
    shadow_failed: int

    @property
    def observed(self) -> int:
        return self.candidate.requests + self.shadow_compared

    @property
    def error_ratio(self) -> float | None:
        return self.candidate.errors / self.candidate.requests if self.candidate.requests else None

    @property
    def p99_ratio(self) -> float | None:
        if self.production is None or not self.production.p99_s or self.candidate.p99_s is None:
            return None
        return self.candidate.p99_s / self.production.p99_s


def shortfalls(requirements: PromotionRequirements, evidence: Evidence) -> list[str]:
    """Each requirement the evidence does not meet, said with the measured value."""
    failed = []
    if evidence.observed < requirements.min_requests:
        failed.append(
            f"observed {evidence.observed} requests (canary answers + shadow comparisons), "
            f"requires {requirements.min_requests}"
        )
    if requirements.min_agreement is not None:
        agreement = evidence.shadow_agreement
        if agreement is None or agreement < requirements.min_agreement:
            failed.append(
                f"shadow agreement {_fmt(agreement)} over {evidence.shadow_compared} "
                f"comparisons, requires >= {requirements.min_agreement}"
            )
    if requirements.max_p99_ratio is not None:
        ratio = evidence.p99_ratio
        if ratio is None or ratio > requirements.max_p99_ratio:
            failed.append(f"p99 ratio to production {_fmt(ratio)}, requires <= {requirements.max_p99_ratio}")
    if requirements.max_error_ratio is not None:
        ratio = evidence.error_ratio
        if ratio is None or ratio > requirements.max_error_ratio:
            failed.append(
                f"error ratio {_fmt(ratio)} over {evidence.candidate.requests} answers, "
                f"requires <= {requirements.max_error_ratio}"
            )
    return failed


def gather(metrics: Metrics, shadow: ShadowEvidence, model: str, candidate: int, production: int | None) -> Evidence:
    traffic = version_traffic(metrics, model)
    empty = VersionTraffic(requests=0, errors=0, p99_s=None)
    return Evidence(
        candidate=traffic.get(str(candidate), empty),
        production=None if production is None else traffic.get(str(production), empty),
        shadow_compared=shadow.compared,
        shadow_agreement=shadow.agreement,
        shadow_dropped=shadow.dropped,
        shadow_failed=shadow.failed,
    )


def version_traffic(metrics: Metrics, model: str) -> dict[str, VersionTraffic]:
    """Requests, 5xx answers and p99 latency per version of `model`, from this process's metrics."""
    requests: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    for family in metrics.requests.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("model") == model:
                requests[labels["version"]] += int(sample.value)
                if labels["code"].startswith("5"):
                    errors[labels["version"]] += int(sample.value)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in metrics.request_duration.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("model") == model:
                buckets[sample.labels["version"]][float(sample.labels["le"])] += sample.value
    return {
        version: VersionTraffic(
            requests=requests[version], errors=errors[version], p99_s=histogram_quantile(0.99, buckets.get(version, {}))
        )
        for version in set(requests) | set(buckets)
    }


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus' `histogram_quantile` over cumulative bucket counts (upper bound -> count)."""
    if not cumulative:
        return None
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the +Inf bucket: the largest finite bound, as Prometheus does
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _fmt(value: float | None) -> str:
    return "none yet" if value is None else f"{value:.4g}"
