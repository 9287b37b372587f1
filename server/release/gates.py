"""The gates of a release: what the candidate showed against production over the same window.

Pure functions of two fleet-wide `WindowSummary`s (control path). Each gate reports what it
measured, its bound, its sample size and its verdict. The driver judges the evidence since the
step started on every tick, so every gate is *anytime-valid*: its bounds are confidence sequences
(`sequential.py`), which hold at every sample size at once, so looking every tick does not add
false alarms.

Two kinds of gate (Lindon, Malek et al., "Rapid Regression Detection in Software Deployments
through Sequential Testing", KDD 2022, frame canaries the same way):
- regression gates (error rate, p99 latency, prediction distribution) FAIL only when the
  confidence sequences show the candidate beyond its bound; without that they PASS once the
  step's minimum samples are in, and are INCONCLUSIVE (never a pass) before;
- the evidence-to-pass gate (agreement) PASSES when its lower confidence bound reaches
  `min_agreement` and FAILS when its upper bound falls below it.

Each gate of each step gets `alpha` = the policy's `false_alarm` / (gates x steps) (`gate_alpha`),
so by the union bound an identical candidate fails any gate of any step, however often looked
at, with probability at most `false_alarm` (1% by default) over the whole release.
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from server.evidence.summary import PredictionHistogram, WindowSummary, candidate_errors
from server.release.policy import GateBounds, ReleasePolicy
from server.release.sequential import proportion_bounds, quantile_bounds

GATES_PER_STEP = 5
"""Statistical gates a step may judge (error_rate, p99_ratio, agreement, psi, and label_loss when
labels come: `label_gate.py`) among which each step's share of the release's false-alarm
probability is split; the shadow step judges four at most, so its share is a little
conservative. A new statistical gate raises this."""
LATENCY_QUANTILE = 0.99
PSI_SMOOTHING = 0.5
"""Added to every bin's count before shares are taken for the reported PSI (Jeffreys' prior): it
stays finite, and an empty bin of a small sample is not read as a share of zero."""


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
    """The statistic the verdict compares with `bound` (a confidence bound, see each gate)."""
    bound: float
    observed: float | None = None
    """The point figure `measured` bounds (the candidate's error share, agreement share, p99
    ratio, PSI); None before any sample, or where the gate reports none."""
    samples: int
    verdict: Verdict
    detail: str


class Decision(BaseModel):
    """Every gate's result and the verdict: any fail fails, all pass passes, else inconclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    gates: tuple[GateResult, ...]


def gate_alpha(policy: ReleasePolicy) -> float:
    """Each gate's false-alarm probability in one step: the release's `gates.false_alarm` split
    evenly (Bonferroni) over GATES_PER_STEP x steps (the shadow and each canary weight)."""
    return policy.gates.false_alarm / (GATES_PER_STEP * (1 + len(policy.canary_weights)))


DEFAULT_ALPHA = gate_alpha(ReleasePolicy())
"""`gate_alpha` of the default policy (0.01 / (5 x 4) = 0.0005)."""


def error_counts(candidate: WindowSummary, baseline: WindowSummary, copies: bool = False) -> tuple[int, int, int, int]:
    """What the error gate counts: (candidate errors, out of, production errors, out of). The
    one place that says what an error is: a shadow's (`copies`) are the copies it failed to answer;
    a canary's, its answers production would not have given (`candidate_errors`); production's,
    its server errors."""
    if copies:
        errors, total = candidate.comparisons.failed, candidate.comparisons.failed + candidate.comparisons.compared
    else:
        errors, total = candidate_errors(candidate, baseline)  # 5xx, and 4xx production did not give
    return errors, total, baseline.errors, baseline.requests


def error_gate(
    candidate: WindowSummary,
    baseline: WindowSummary,
    bounds: GateBounds,
    copies: bool = False,
    alpha: float = DEFAULT_ALPHA,
) -> GateResult:
    """The candidate's error rate against production's: of its answers, or with `copies` (a
    shadow, which answers nobody) of the copies it was sent.

    Null: candidate rate <= `max_error_ratio` x production's + `error_rate_slack`. Fails when the
    candidate's lower confidence bound exceeds `max_error_ratio` x production's upper bound +
    slack, each a beta-binomial confidence sequence at alpha / 2 (Howard et al. 2021), so under
    the null it fails with probability <= alpha over the whole step. `measured` is that lower bound.
    """
    errors, total, base_errors, base_total = error_counts(candidate, baseline, copies)
    samples = min(total, base_total)
    lower, _ = proportion_bounds(errors, total, alpha / 2)
    _, base_upper = proportion_bounds(base_errors, base_total, alpha / 2)
    bound = base_upper * bounds.max_error_ratio + bounds.error_rate_slack
    if lower > bound:
        verdict = Verdict.FAIL
    elif samples < bounds.min_requests:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS
    detail = (
        f"candidate {errors}/{total} errors (lower bound {lower:.4f}), production {base_errors}/{base_total} "
        f"(upper bound {base_upper:.4f}); {samples} of {bounds.min_requests} requests needed to pass"
    )
    return GateResult(
        gate="error_rate",
        measured=lower if total else None,
        bound=bound,
        observed=errors / total if total else None,
        samples=samples,
        verdict=verdict,
        detail=detail,
    )


def latency_gate(
    candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds, alpha: float = DEFAULT_ALPHA
) -> GateResult:
    """The candidate's p99 latency against production's.

    Null: candidate p99 <= `max_p99_ratio` x production's. Fails when the candidate's lower
    confidence bound on its p99 exceeds `max_p99_ratio` x production's upper bound, each a quantile
    confidence sequence at alpha / 2 (Howard and Ramdas 2022) read conservatively off the latency
    histogram (a bucket's lower edge for the lower bound, its upper edge for the upper). `measured`
    is that lower bound over that upper bound (0 while production's upper bound is unknown).
    """
    cand, base = candidate.latency, baseline.latency
    samples = min(sum(cand.counts), sum(base.counts))
    lower, _ = quantile_bounds(cand.counts, cand.bounds_s, LATENCY_QUANTILE, alpha / 2)
    _, upper = quantile_bounds(base.counts, base.bounds_s, LATENCY_QUANTILE, alpha / 2)
    ratio = lower / upper if math.isfinite(upper) else 0.0
    # The gate passes only where it could have failed: until both p99s are bounded (about 1,440
    # samples a side at the default alpha), a candidate of any latency would "pass" the bound.
    bounded = lower > 0.0 and math.isfinite(upper)
    if ratio > bounds.max_p99_ratio:
        verdict = Verdict.FAIL
    elif samples < bounds.min_latency_samples or not bounded:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS
    cand_p99, base_p99 = cand.quantile(LATENCY_QUANTILE), base.quantile(LATENCY_QUANTILE)
    point = (
        ""
        if cand_p99 is None or base_p99 is None
        else f"p99 candidate {cand_p99 * 1000:.3g} ms, production {base_p99 * 1000:.3g} ms; "
    )
    detail = (
        f"{point}candidate's p99 >= {lower * 1000:.3g} ms, production's <= {upper * 1000:.3g} ms; "
        f"{samples} of {bounds.min_latency_samples} latency samples needed to pass"
        + ("" if bounded else "; too few samples yet to bound both p99s (no pass before they are)")
    )
    return GateResult(
        gate="p99_ratio",
        measured=ratio,
        bound=bounds.max_p99_ratio,
        observed=cand_p99 / base_p99
        if cand_p99 is not None and base_p99 and math.isfinite(cand_p99 / base_p99)
        else None,
        samples=samples,
        verdict=verdict,
        detail=detail,
    )


def agreement_gate(candidate: WindowSummary, bounds: GateBounds, alpha: float = DEFAULT_ALPHA) -> GateResult:
    """The share of compared copies with the same answer: passes when its lower confidence bound
    reaches `min_agreement`, fails when its upper bound is below it (a beta-binomial confidence
    sequence at alpha, Howard et al. 2021); `measured` is the lower bound."""
    comparisons = candidate.comparisons
    lower, upper = proportion_bounds(comparisons.agreed, comparisons.compared, alpha)
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
        observed=comparisons.agreed / comparisons.compared if comparisons.compared else None,
        samples=comparisons.compared,
        verdict=verdict,
        detail=f"{comparisons.agreed}/{comparisons.compared} agreed, confidence bounds [{lower:.4f}, {upper:.4f}]",
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


def psi_lower_bound(candidate: PredictionHistogram, baseline: PredictionHistogram, alpha: float) -> float:
    """A lower confidence bound on the PSI of the two distributions the histograms were drawn from.

    Each bin's share of each version has a beta-binomial confidence sequence at alpha / (2 x
    bins) (Howard et al. 2021), so all 2 x bins hold at once with probability >= 1 - alpha. PSI
    is a sum of terms (p - q) ln(p / q) >= 0, each increasing in |p - q| on either side: its
    smallest value over the two intervals is 0 when they overlap, else the term at their nearest
    ends; the sum of those (which ignores that shares sum to 1, so is lower still) bounds the PSI
    from below whenever the intervals all hold. (Lindon and Malek's sequential multinomial test,
    NeurIPS 2022, tests equal distributions; the gate's null allows up to `max_psi`, hence this.)
    """
    if len(candidate.counts) != len(baseline.counts):
        raise ValueError("prediction histograms on different bins cannot be compared")
    each = alpha / (2 * len(candidate.counts))
    cand_total, base_total = sum(candidate.counts), sum(baseline.counts)
    total = 0.0
    for c, b in zip(candidate.counts, baseline.counts, strict=True):
        p_low, p_high = proportion_bounds(c, cand_total, each)
        q_low, q_high = proportion_bounds(b, base_total, each)
        if p_low > q_high:
            total += (p_low - q_high) * math.log(p_low / q_high)
        elif q_low > p_high:
            total += (q_low - p_high) * math.log(q_low / p_high)
    return total


def distribution_gate(
    candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds, alpha: float = DEFAULT_ALPHA
) -> GateResult | None:
    """The candidate's predictions against production's, on the bins of the drift reference.

    Null: PSI <= `max_psi`. Fails when `psi_lower_bound` (at alpha) exceeds it; `measured` is that
    lower bound. None when either version has no prediction reference to bin on."""
    if candidate.predictions is None or baseline.predictions is None:
        return None
    samples = min(sum(candidate.predictions.counts), sum(baseline.predictions.counts))
    lower = psi_lower_bound(candidate.predictions, baseline.predictions, alpha)
    if lower > bounds.max_psi:
        verdict = Verdict.FAIL
    elif samples < bounds.min_requests:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS
    return GateResult(
        gate="psi",
        measured=lower,
        bound=bounds.max_psi,
        observed=psi(candidate.predictions, baseline.predictions),
        samples=samples,
        verdict=verdict,
        detail=f"PSI {psi(candidate.predictions, baseline.predictions):.4f} (lower bound {lower:.4f}) of the "
        f"candidate's predictions against production's over the same window; {samples} of {bounds.min_requests} "
        "predictions needed to pass",
    )


def combine(gates: list[GateResult]) -> Decision:
    verdicts = {g.verdict for g in gates} - {Verdict.NOT_JUDGED}
    if Verdict.FAIL in verdicts:
        verdict = Verdict.FAIL
    elif verdicts == {Verdict.PASS}:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.INCONCLUSIVE
    return Decision(verdict=verdict, gates=tuple(gates))


def shadow_decision(
    candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds, alpha: float = DEFAULT_ALPHA
) -> Decision:
    """The shadow step: the candidate answers copies only, so its errors, agreement and predictions
    are judged (its latency is that of copies, not of answers)."""
    gates = [
        error_gate(candidate, baseline, bounds, copies=True, alpha=alpha),
        agreement_gate(candidate, bounds, alpha),
    ]
    distribution = distribution_gate(candidate, baseline, bounds, alpha)
    return combine(gates if distribution is None else [*gates, distribution])


def canary_decision(
    candidate: WindowSummary, baseline: WindowSummary, bounds: GateBounds, alpha: float = DEFAULT_ALPHA
) -> Decision:
    """A canary step: the candidate answers its share; every gate applies."""
    gates = [
        error_gate(candidate, baseline, bounds, alpha=alpha),
        latency_gate(candidate, baseline, bounds, alpha),
        agreement_gate(candidate, bounds, alpha),
    ]
    distribution = distribution_gate(candidate, baseline, bounds, alpha)
    return combine(gates if distribution is None else [*gates, distribution])
