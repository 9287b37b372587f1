"""The label gate: candidate against production on the same labelled requests, anytime-valid."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

from server.quality.contract import QualityContracts
from server.quality.metrics import row_losses
from server.quality.pairs import Pair, SqlitePairStore
from server.release.gates import GateResult, Verdict, combine
from server.release.label_bounds import LabelGateBounds
from server.release.label_gate import LabelGate, confidence_sequence, decide, mixing_rho
from server.release.policy import ReleasePolicy

sys.path.insert(0, str(Path(__file__).parent))
from labels_models import write_manifest  # noqa: E402

DEFAULTS = LabelGateBounds()


def _losses(rng: np.random.Generator, n: int, candidate_noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-request log losses of a calibrated production model and a candidate scoring the same
    requests with extra noise on the logit scale (0: the same model, a fresh draw of its error)."""
    truth = rng.beta(2, 5, n)
    labels = (rng.random(n) < truth).astype(np.float64)
    logit = np.log(truth / (1 - truth))
    production = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.3, n))))
    candidate = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.3 + candidate_noise, n))))
    return row_losses("binary", candidate, labels), row_losses("binary", production, labels)


def _first_fail_or_pass(cand: np.ndarray, prod: np.ndarray, bounds: LabelGateBounds, step: int) -> Verdict:
    """Judge after every `step` labels, as the driver does each tick; the first decisive verdict."""
    for n in range(bounds.min_pairs, cand.size + 1, step):
        verdict = decide(cand[:n], prod[:n], bounds).verdict
        if verdict in (Verdict.FAIL, Verdict.PASS):
            return verdict
    return Verdict.NOT_JUDGED


def test_an_equal_candidate_is_rarely_failed_though_judged_at_every_tick() -> None:
    # Looked at every 25 labels up to 3000, at the default bounds: a candidate as good as production
    # must almost never be failed (the bound is a confidence sequence, not a re-checked interval).
    rng = np.random.default_rng(11)
    failed = sum(_first_fail_or_pass(*_losses(rng, 3000, 0.0), DEFAULTS, step=25) is Verdict.FAIL for _ in range(200))
    assert failed <= 2  # at most 1%, the whole release's false-alarm budget (this gate gets a share)


def test_at_the_margin_itself_failures_stay_under_alpha() -> None:
    # The least favourable candidate: exactly (1 + margin) x production's loss on average.
    rng = np.random.default_rng(12)
    failed = 0
    for _ in range(200):
        cand, prod = _losses(rng, 3000, 0.0)
        shifted = cand + (DEFAULTS.max_loss_increase * prod.mean() + prod.mean() - cand.mean())
        failed += _first_fail_or_pass(shifted, prod, DEFAULTS, step=25) is Verdict.FAIL
    assert failed / 200 <= 0.01  # the release's whole budget; the gate's share is 0.0005


def test_a_clearly_worse_candidate_fails_and_a_better_one_passes() -> None:
    rng = np.random.default_rng(13)
    worse_c, worse_p = _losses(rng, 3000, 1.5)
    assert decide(worse_c, worse_p, DEFAULTS).verdict is Verdict.FAIL
    better_p, better_c = _losses(rng, 3000, 1.5)  # production is the noisy one
    assert decide(better_c, better_p, DEFAULTS).verdict is Verdict.PASS


def test_too_few_labels_is_not_judged_unless_the_policy_requires_labels() -> None:
    cand, prod = np.full(10, 2.0), np.full(10, 0.1)
    assert decide(cand, prod, DEFAULTS).verdict is Verdict.NOT_JUDGED
    assert decide(cand, prod, LabelGateBounds(required=True)).verdict is Verdict.INCONCLUSIVE
    assert decide(np.empty(0), np.empty(0), DEFAULTS).samples == 0


def test_a_gate_not_judged_does_not_hold_the_decision() -> None:
    passed = GateResult(gate="error_rate", measured=0.0, bound=0.01, samples=500, verdict=Verdict.PASS, detail="")
    unjudged = decide(np.empty(0), np.empty(0), DEFAULTS)
    assert combine([passed, unjudged]).verdict is Verdict.PASS
    assert ReleasePolicy().labels == DEFAULTS and not ReleasePolicy().labels.required


def test_the_sequence_narrows_with_samples_and_covers_the_mean() -> None:
    rng = np.random.default_rng(14)
    rho = mixing_rho(0.05, 200)
    values = rng.normal(0.3, 1.0, 5000)
    small, large = confidence_sequence(values[:200], 0.05, rho), confidence_sequence(values, 0.05, rho)
    assert small.lower < 0.3 < small.upper and large.lower < 0.3 < large.upper
    assert large.upper - large.lower < small.upper - small.lower


def test_the_gate_reads_both_directions_of_shadowing_from_the_pairs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_manifest(repo, "m", 1, "binary")
    write_manifest(repo, "m", 2, "binary")
    store = SqlitePairStore(tmp_path / "p.sqlite3", 300.0, 86400.0, 100_000, clock=lambda: 1000.0)
    rng = np.random.default_rng(15)
    pairs = []
    for i in range(400):
        y = float(rng.random() < 0.5)
        good, bad = (0.8 if y else 0.2), (0.3 if y else 0.7)
        if i % 2:  # production (1) answered, the candidate (2) was its shadow
            pairs.append(Pair(f"r{i}", 0, 1, 900.0, y, [good], 2, [bad]))
        else:  # a canary request: the candidate answered, production was its shadow
            pairs.append(Pair(f"r{i}", 0, 2, 900.0, y, [bad], 1, [good]))
    pairs.append(Pair("unrelated", 0, 1, 900.0, 1.0, [0.9]))  # no shadow: not a paired request
    store.add("m", pairs)
    gate = LabelGate(store, QualityContracts(repo))
    cand, prod = gate.losses("m", 2, 1, 0.0, 1000.0)
    assert cand.size == prod.size == 400 and cand.mean() > prod.mean()
    result = asyncio.run(gate.judge("m", 2, 1, 0.0, 1000.0, DEFAULTS))
    assert result.verdict is Verdict.FAIL and result.samples == 400
