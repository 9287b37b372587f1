"""The label gate of a release: candidate against production on the SAME labelled requests.

During a release the candidate runs as production's shadow (and production as the canary's), and
capture keeps both answers of each request; when labels come for those requests, each one gives
a paired difference of per-request loss (the task's selection metric, `metrics.row_losses`:
cross-entropy for classifiers, squared error for regression):

    d_i = loss_candidate_i - (1 + m) x loss_production_i      (m: `max_loss_increase`)

E[d] <= 0 means the candidate's mean loss is at most (1 + m) times production's. The driver looks
at the gate every tick, so its bound must hold at every look: it is an asymptotic confidence
sequence for E[d] with the normal-mixture boundary (Waudby-Smith, Arbour, Sinha, Kennedy and
Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", Annals of
Statistics 2024, Theorem 2.2; the boundary of Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021):

    mean_t +/- sqrt( 2 (t s_t^2 rho^2 + 1) / (t^2 rho^2) x log( sqrt(t s_t^2 rho^2 + 1) / alpha ) )

with s_t^2 the sample variance and rho tuned to be tightest at `min_pairs` pairs. FAIL when the
lower bound is above 0 (the candidate is worse by more than the margin), PASS when the upper
bound is at most 0, otherwise undecided. Too few pairs, or an undecided bound, is NOT_JUDGED
unless the policy requires labels (then INCONCLUSIVE): a release without labels is decided by its
other gates.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np

from server.errors import HotserveError
from server.quality.contract import QualityContracts
from server.quality.live import score_matrix
from server.quality.metrics import row_losses
from server.quality.pairs import Pair, PairStore
from server.release.gates import DEFAULT_ALPHA, GateResult, Verdict
from server.release.label_bounds import LabelGateBounds

GATE = "label_loss"


@dataclass(frozen=True, slots=True)
class ConfidenceSequence:
    """The bound on E[d] after `n` paired differences."""

    n: int
    mean: float
    lower: float
    upper: float


def mixing_rho(alpha: float, tightest_at: int) -> float:
    """The normal mixture's rho that makes the boundary tightest near `tightest_at` samples of unit
    variance (Howard et al. 2021, section 3.5)."""
    log_term = -2.0 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1.0)) / tightest_at)


def confidence_sequence(values: np.ndarray, alpha: float, rho: float) -> ConfidenceSequence:
    """The asymptotic confidence sequence (normal mixture) for the mean of `values` (see module)."""
    n = int(values.size)
    if n == 0:
        return ConfidenceSequence(0, math.nan, -math.inf, math.inf)
    mean = float(values.mean())
    variance = float(values.var(ddof=1)) if n > 1 else 0.0
    scaled = n * variance * rho * rho + 1.0
    radius = math.sqrt(2.0 * scaled / (n * n * rho * rho) * math.log(math.sqrt(scaled) / alpha))
    return ConfidenceSequence(n, mean, mean - radius, mean + radius)


def paired_differences(
    candidate_losses: np.ndarray, production_losses: np.ndarray, max_loss_increase: float
) -> np.ndarray:
    return candidate_losses - (1.0 + max_loss_increase) * production_losses


def decide(
    candidate_losses: np.ndarray,
    production_losses: np.ndarray,
    bounds: LabelGateBounds,
    alpha: float = DEFAULT_ALPHA,
) -> GateResult:
    """The gate's verdict on paired per-request losses (same requests, same order); `alpha` is this
    gate's share of the release's false-alarm probability (`gates.gate_alpha`), like every gate's."""
    n = int(candidate_losses.size)
    undecided = Verdict.INCONCLUSIVE if bounds.required else Verdict.NOT_JUDGED
    production_mean = float(production_losses.mean()) if n else math.nan
    bound = bounds.max_loss_increase * production_mean if n else 0.0
    measured = float((candidate_losses - production_losses).mean()) if n else None
    if n < bounds.min_pairs:
        return GateResult(
            gate=GATE,
            measured=measured,
            bound=bound,
            samples=n,
            verdict=undecided,
            detail=f"{n} labelled requests answered by both versions of {bounds.min_pairs} needed",
        )
    differences = paired_differences(candidate_losses, production_losses, bounds.max_loss_increase)
    cs = confidence_sequence(differences, alpha, mixing_rho(alpha, bounds.min_pairs))
    if cs.lower > 0.0:
        verdict = Verdict.FAIL
    elif cs.upper <= 0.0:
        verdict = Verdict.PASS
    else:
        verdict = undecided
    detail = (
        f"mean loss per request: candidate {float(candidate_losses.mean()):.5f}, production {production_mean:.5f} "
        f"on the same {n} labelled requests; candidate - {1 + bounds.max_loss_increase:g} x production: "
        f"{cs.mean:.5f}, {100 * (1 - alpha):g}% confidence sequence [{cs.lower:.5f}, {cs.upper:.5f}]"
    )
    return GateResult(gate=GATE, measured=measured, bound=bound, samples=n, verdict=verdict, detail=detail)


class LabelGate:
    """Reads the labelled pairs of a release's two versions and judges them (control path)."""

    def __init__(self, pairs: PairStore, contracts: QualityContracts) -> None:
        self._pairs = pairs
        self._contracts = contracts

    def losses(
        self, model: str, candidate: int, baseline: int, since: float, until: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(candidate's, production's) per-request losses on the labelled requests both answered in
        [since, until): production's answers with the candidate's shadow copy, and the candidate's
        (a canary's) with production's copy. Blocking."""
        cand = self._contracts.get(model, candidate)
        base = self._contracts.get(model, baseline)
        if cand is None or base is None or cand.task != base.task:
            return np.empty(0), np.empty(0)
        as_primary: dict[int, list[Pair]] = {
            baseline: [p for p in self._pairs.load(model, baseline, since, until) if p.shadow_version == candidate],
            candidate: [p for p in self._pairs.load(model, candidate, since, until) if p.shadow_version == baseline],
        }
        kept = {v: [p for p in pairs if since <= p.ts < until and p.shadow_score] for v, pairs in as_primary.items()}
        scores_c = [p.shadow_score or [] for p in kept[baseline]] + [p.score for p in kept[candidate]]
        scores_b = [p.score for p in kept[baseline]] + [p.shadow_score or [] for p in kept[candidate]]
        labels = np.asarray([p.label for p in kept[baseline] + kept[candidate]], dtype=np.float64)
        if not labels.size:
            return np.empty(0), np.empty(0)
        if cand.task == "multiclass" and any(len(s) < 2 for s in scores_c + scores_b):
            return np.empty(0), np.empty(0)  # classes only, no probabilities: no loss to compare
        return (
            row_losses(cand.task, score_matrix(cand, scores_c), labels),
            row_losses(base.task, score_matrix(base, scores_b), labels),
        )

    async def judge(
        self,
        model: str,
        candidate: int,
        baseline: int,
        since: float,
        until: float,
        bounds: LabelGateBounds,
        alpha: float = DEFAULT_ALPHA,
    ) -> GateResult:
        try:
            cand, base = await asyncio.to_thread(self.losses, model, candidate, baseline, since, until)
        except HotserveError as error:
            return GateResult(
                gate=GATE,
                measured=None,
                bound=0.0,
                samples=0,
                verdict=Verdict.INCONCLUSIVE if bounds.required else Verdict.NOT_JUDGED,
                detail=f"labelled pairs unreadable: {error.message}",
            )
        return decide(cand, base, bounds, alpha)
