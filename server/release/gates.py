"""The gates of a release: what the candidate showed against production over the same window.

Pure functions of two fleet-wide `WindowSummary`s (control path). Each gate reports what it
measured, its bound, its sample size and its verdict. Too few samples is INCONCLUSIVE, never a
pass: a release decides on evidence or not at all. Agreement is judged on Wilson bounds, so a
handful of lucky comparisons does not pass and a handful of unlucky ones does not fail.
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from server.evidence.summary import PredictionHistogram, WindowSummary, candidate_errors
from server.release.policy import GateBounds

PSI_SMOOTHING = 0.5
"""Added to every bin's count before shares are taken (Jeffreys' prior): PSI stays finite, and an
empty bin of a small sample is not read as a share of zero. With a floor such as drift
monitoring's 1e-4 instead, a bin holding 1% of production's predictions that a small candidate
sample leaves empty by chance adds (0.01 - 1e-4) x ln(0.01 / 1e-4) = 0.046 on its own."""
PSI_FALSE_ALARM_Z = 2.326
"""The noise allowance is PSI's 99th percentile between two samples of one distribution."""


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NOT_JUDGED = "not_judged"
    """Reported, but not counted: the gate had nothing to judge and the policy lets that pass (the label
    gate of a release without labels)."""


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: str
    measured: float | None
    bound: float
    samples: int
    verdict: Verdict
    detail: str


class Decision(BaseModel):
    """Every gate's result and the verdict: any fail fails, all pass passes, else inconclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    gates: tuple[GateResult, ...]


def error_gate(
    candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds, copies: bool = False
) -> GateResult:
    """The candidate's error rate against production's: of its answers, or with `copies` (a
    shadow, which answers nobody) of the copies it was sent. Fails when even the Wilson lower
    bound of the candidate's rate is above the bound, so a few unlucky errors are no false alarm."""
    if copies:
        errors, total = candidate.comparisons.failed, candidate.comparisons.failed + candidate.comparisons.compared
    else:
        errors, total = candidate_errors(candidate, baseline)  # 5xx, and 4xx production did not give
    samples = min(total, baseline.requests)
    base_rate = baseline.errors / baseline.requests if baseline.requests else 0.0
    bound = base_rate * bounds.max_error_ratio + bounds.error_rate_slack
    measured = errors / total if total else None
    if measured is None or samples < bounds.min_requests:
        return GateResult(
            gate="error_rate",
            measured=measured,
            bound=bound,
            samples=samples,
            verdict=Verdict.INCONCLUSIVE,
            detail=f"{samples} requests of {bounds.min_requests} needed",
        )
    lower, _ = wilson_bounds(errors, total, bounds.agreement_z)
    verdict = Verdict.FAIL if lower > bound else Verdict.PASS
    detail = f"candidate {errors}/{total} errors (Wilson lower bound {lower:.4f}), production {baseline.errors}/{baseline.requests}"
    return GateResult(
        gate="error_rate", measured=measured, bound=bound, samples=samples, verdict=verdict, detail=detail
    )


def latency_gate(candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds) -> GateResult:
    samples = min(sum(candidate.latency.counts), sum(baseline.latency.counts))
    cand_p99, base_p99 = candidate.latency.quantile(0.99), baseline.latency.quantile(0.99)
    if samples < bounds.min_latency_samples or cand_p99 is None or not base_p99:
        return GateResult(
            gate="p99_ratio",
            measured=None,
            bound=bounds.max_p99_ratio,
            samples=samples,
            verdict=Verdict.INCONCLUSIVE,
            detail=f"{samples} latency samples of {bounds.min_latency_samples} needed",
        )
    ratio = cand_p99 / base_p99
    return GateResult(
        gate="p99_ratio",
        measured=ratio,
        bound=bounds.max_p99_ratio,
        samples=samples,
        verdict=Verdict.PASS if ratio <= bounds.max_p99_ratio else Verdict.FAIL,
        detail=f"p99 candidate {cand_p99 * 1000:.3g} ms, production {base_p99 * 1000:.3g} ms",
    )


def wilson_bounds(successes: int, trials: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) with no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement_gate(candidate: WindowSummary, bounds: GateBounds) -> GateResult:
    """Passes when the lower bound reaches `min_agreement`, fails when the upper bound is below it."""
    comparisons = candidate.comparisons
    lower, upper = wilson_bounds(comparisons.agreed, comparisons.compared, bounds.agreement_z)
    if lower >= bounds.min_agreement:
        verdict = Verdict.PASS
    elif upper < bounds.min_agreement:
        verdict = Verdict.FAIL
    else:
        verdict = Verdict.INCONCLUSIVE
    return GateResult(
        gate="agreement",
        measured=lower if comparisons.compared else None,
        bound=bounds.min_agreement,
        samples=comparisons.compared,
        verdict=verdict,
        detail=f"{comparisons.agreed}/{comparisons.compared} agreed, Wilson bounds [{lower:.4f}, {upper:.4f}]",
    )


def psi(candidate: PredictionHistogram, baseline: PredictionHistogram) -> float:
    """Population stability index of `candidate`'s bins against `baseline`'s (same bins)."""
    if len(candidate.counts) != len(baseline.counts):
        raise ValueError("prediction histograms on different bins cannot be compared")
    bins = len(candidate.counts)
    cand_total = sum(candidate.counts) + PSI_SMOOTHING * bins
    base_total = sum(baseline.counts) + PSI_SMOOTHING * bins
    total = 0.0
    for c, b in zip(candidate.counts, baseline.counts, strict=True):
        p = (c + PSI_SMOOTHING) / cand_total
        q = (b + PSI_SMOOTHING) / base_total
        total += (p - q) * math.log(p / q)
    return total


def distribution_gate(candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds) -> GateResult | None:
    """None when either version has no prediction reference to bin on (the gate does not apply)."""
    if candidate.predictions is None or baseline.predictions is None:
        return None
    samples = min(sum(candidate.predictions.counts), sum(baseline.predictions.counts))
    if samples < bounds.min_requests:
        return GateResult(
            gate="psi",
            measured=None,
            bound=bounds.max_psi,
            samples=samples,
            verdict=Verdict.INCONCLUSIVE,
            detail=f"{samples} predictions of {bounds.min_requests} needed",
        )
    value = psi(candidate.predictions, baseline.predictions)
    bound = bounds.max_psi + psi_noise(candidate.predictions, baseline.predictions)
    return GateResult(
        gate="psi",
        measured=value,
        bound=bound,
        samples=samples,
        verdict=Verdict.PASS if value <= bound else Verdict.FAIL,
        detail=f"candidate's predictions against production's over the same window (max_psi {bounds.max_psi} + the 99th percentile of sampling noise)",
    )


def psi_noise(candidate: PredictionHistogram, baseline: PredictionHistogram) -> float:
    """The PSI two samples of one distribution stay under 99 times in 100: PSI x (1/n1 + 1/n2)^-1
    is asymptotically chi-square with (bins used - 1) degrees of freedom; its 99th percentile
    (Wilson-Hilferty) is added to the bound, so that thin samples are no alarm."""
    used = sum(1 for c, b in zip(candidate.counts, baseline.counts, strict=True) if c or b)
    return chi_square_quantile(used - 1, PSI_FALSE_ALARM_Z) * (1 / sum(candidate.counts) + 1 / sum(baseline.counts))


def chi_square_quantile(degrees: int, z: float) -> float:
    """The chi-square quantile with `degrees` of freedom at standard normal quantile `z`
    (Wilson-Hilferty: within 1% of the exact value from 3 degrees of freedom up)."""
    if degrees <= 0:
        return 0.0
    k = 2.0 / (9.0 * degrees)
    return degrees * max(1.0 - k + z * math.sqrt(k), 0.0) ** 3


def combine(gates: list[GateResult]) -> Decision:
    verdicts = {g.verdict for g in gates} - {Verdict.NOT_JUDGED}
    if Verdict.FAIL in verdicts:
        verdict = Verdict.FAIL
    elif verdicts == {Verdict.PASS}:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.INCONCLUSIVE
    return Decision(verdict=verdict, gates=tuple(gates))


def shadow_decision(candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds) -> Decision:
    """The shadow step: the candidate answers copies only, so its errors, agreement and predictions
    are judged (its latency is that of copies, not of answers)."""
    gates = [error_gate(candidate, baseline, bounds, copies=True), agreement_gate(candidate, bounds)]
    distribution = distribution_gate(candidate, baseline, bounds)
    return combine(gates if distribution is None else [*gates, distribution])


def canary_decision(candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds) -> Decision:
    """A canary step: the candidate answers its share; every gate applies."""
    gates = [
        error_gate(candidate, baseline, bounds),
        latency_gate(candidate, baseline, bounds),
        agreement_gate(candidate, bounds),
    ]
    distribution = distribution_gate(candidate, baseline, bounds)
    return combine(gates if distribution is None else [*gates, distribution])
