"""Guarded promotion: the evidence a candidate version earned against production, and the verdict.

Control path. A `promote` may carry `PromotionRequirements`; the controller reads the candidate's
`Evidence` from the evidence recorder (`server/evidence/`): the candidate's answers, 5xx, latency
and shadow comparisons, and production's answers and latency, both over the same window (from
the candidate's current load until now; a reload starts from zero). Evidence that falls short
refuses the promotion (409, the evidence in the body) unless it is forced, which the audit log
records.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from server.evidence.recorder import EvidenceRecorder
from server.evidence.summary import WindowSummary


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

    @classmethod
    def of(cls, summary: WindowSummary) -> VersionTraffic:
        return cls(requests=summary.requests, errors=summary.errors, p99_s=summary.latency.quantile(0.99))


class Evidence(BaseModel):
    """What a candidate showed against the production version over one window (epoch seconds)."""

    candidate: VersionTraffic
    production: VersionTraffic | None
    shadow_compared: int
    shadow_agreement: float | None
    shadow_dropped: int
    shadow_failed: int
    since: float
    """Start of the window both versions were measured over (the candidate's load, bucket-aligned)."""
    until: float

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


async def gather(recorder: EvidenceRecorder, model: str, candidate: int, production: int | None) -> Evidence:
    """The candidate's evidence against `production` over the same window, from its current load."""
    comparison = await recorder.compare(model, candidate, production)
    shadow = comparison.candidate.comparisons
    return Evidence(
        candidate=VersionTraffic.of(comparison.candidate),
        production=None if comparison.baseline is None else VersionTraffic.of(comparison.baseline),
        shadow_compared=shadow.compared,
        shadow_agreement=shadow.agreement,
        shadow_dropped=shadow.dropped,
        shadow_failed=shadow.failed,
        since=comparison.since,
        until=comparison.until,
    )


def _fmt(value: float | None) -> str:
    return "none yet" if value is None else f"{value:.4g}"
