"""Release gates and their decision on synthetic fleet-wide evidence (pure functions)."""

from __future__ import annotations

import random
from bisect import bisect_left
from pathlib import Path

import pytest

from server.evidence.summary import (
    LATENCY_BOUNDS_S,
    CopyComparisons,
    LatencyHistogram,
    PredictionHistogram,
    WindowSummary,
)
from server.release.gates import (
    DEFAULT_ALPHA,
    Verdict,
    agreement_gate,
    canary_decision,
    error_gate,
    gate_alpha,
    latency_gate,
    shadow_decision,
)
from server.release.policy import GateBounds, ReleasePolicy
from server.release.sequential import count_bounds, proportion_bounds

EDGES = tuple(i / 10 for i in range(11))
BOUNDS = GateBounds()


def simulated(
    rng: random.Random,
    version: int,
    requests: int,
    error_rate: float = 0.002,
    latency_scale: float = 1.0,
    flip_rate: float = 0.0,
    score_shift: float = 0.0,
    compared: int = 0,
) -> WindowSummary:
    """One version's evidence over a window: lognormal latencies, scores of a Beta(2, 5) model."""
    latency = [0] * (len(LATENCY_BOUNDS_S) + 1)
    scores = [0] * (len(EDGES) - 1)
    errors = 0
    for _ in range(requests):
        if rng.random() < error_rate:
            errors += 1
        latency[bisect_left(LATENCY_BOUNDS_S, rng.lognormvariate(-6.0, 0.4) * latency_scale)] += 1
        score = min(max(rng.betavariate(2, 5) + score_shift, 0.0), 0.999)
        scores[int(score * 10)] += 1
    agreed = sum(1 for _ in range(compared) if rng.random() >= flip_rate)
    return WindowSummary(
        model="fraud",
        version=version,
        since=0.0,
        until=60.0,
        requests=requests,
        errors=errors,
        latency=LatencyHistogram(counts=tuple(latency)),
        comparisons=CopyComparisons(compared=compared, agreed=agreed),
        predictions=PredictionHistogram(output="score", bin_edges=EDGES, counts=tuple(scores)),
    )


def as_shadow(summary: WindowSummary) -> WindowSummary:
    """A shadow's evidence: predictions and comparisons of copies, no answered requests."""
    return summary.model_copy(update={"requests": 0, "errors": 0, "latency": LatencyHistogram()})


def test_proportion_bounds_contain_the_estimate_and_narrow_with_samples() -> None:
    low_10, high_10 = proportion_bounds(10, 10, DEFAULT_ALPHA)
    low_2000, high_2000 = proportion_bounds(2000, 2000, DEFAULT_ALPHA)
    assert high_10 == pytest.approx(1.0) and high_2000 == pytest.approx(1.0)
    assert low_10 < 0.8 < 0.99 < low_2000
    assert proportion_bounds(0, 0, DEFAULT_ALPHA) == (0.0, 1.0)
    low, high = proportion_bounds(20, 1000, DEFAULT_ALPHA)
    assert low < 0.02 < high < 0.05


def test_confidence_sequences_hold_at_every_look_of_a_long_stream() -> None:
    """Looked at after every draw of 5,000, a proportion's bounds at alpha = 0.05 and a p99's
    order-statistic bounds at 0.05 miss the truth in at most alpha of 200 streams (Ville's
    inequality: over all the looks at once)."""
    rng = random.Random(7)
    missed_proportion = missed_quantile = 0
    streams = 200
    for _ in range(streams):
        successes = below = 0
        proportion_missed = quantile_missed = False
        for n in range(1, 5001):
            successes += rng.random() < 0.02
            below += rng.random() < 0.99  # a draw at or below the true p99
            if n % 25 == 0:
                low, high = proportion_bounds(successes, n, 0.05)
                proportion_missed |= not low <= 0.02 <= high
                lo, hi = count_bounds(n, 0.99, 0.05)
                quantile_missed |= not lo <= below <= hi
        missed_proportion += proportion_missed
        missed_quantile += quantile_missed
    assert missed_proportion <= 0.05 * streams and missed_quantile <= 0.05 * streams, (
        missed_proportion,
        missed_quantile,
    )


def test_each_gate_gets_its_share_of_the_release_false_alarm() -> None:
    assert DEFAULT_ALPHA == pytest.approx(0.01 / 20)
    policy = ReleasePolicy(canary_weights=(10, 50), gates=GateBounds(false_alarm=0.03))
    assert gate_alpha(policy) == pytest.approx(0.03 / 15)


def test_a_good_candidate_passes_every_canary_gate() -> None:
    rng = random.Random(1)
    decision = canary_decision(simulated(rng, 2, 2000, compared=2000), simulated(rng, 1, 2000), BOUNDS)
    assert decision.verdict is Verdict.PASS
    assert [g.gate for g in decision.gates] == ["error_rate", "p99_ratio", "agreement", "psi"]
    for gate in decision.gates:
        assert gate.verdict is Verdict.PASS and gate.measured is not None and gate.samples >= 2000


@pytest.mark.parametrize(
    ("bad", "gate"),
    [
        ({"error_rate": 0.05}, "error_rate"),
        ({"latency_scale": 3.0}, "p99_ratio"),  # 1.5x takes tens of thousands: test_release_simulation.py
        ({"flip_rate": 0.03}, "agreement"),
        ({"score_shift": 0.15}, "psi"),
    ],
)
def test_each_bad_candidate_fails_its_gate(bad: dict[str, float], gate: str) -> None:
    rng = random.Random(2)
    candidate = simulated(rng, 2, 2000, compared=2000, **bad)
    decision = canary_decision(candidate, simulated(rng, 1, 2000), BOUNDS)
    assert decision.verdict is Verdict.FAIL
    failed = [g.gate for g in decision.gates if g.verdict is Verdict.FAIL]
    assert failed == [gate]


def test_too_little_traffic_is_inconclusive_never_a_pass() -> None:
    rng = random.Random(3)
    decision = canary_decision(simulated(rng, 2, 50, compared=50), simulated(rng, 1, 50), BOUNDS)
    assert decision.verdict is Verdict.INCONCLUSIVE
    assert {g.verdict for g in decision.gates} == {Verdict.INCONCLUSIVE}
    assert latency_gate(simulated(rng, 2, 50), simulated(rng, 1, 5000), BOUNDS).verdict is Verdict.INCONCLUSIVE


def test_agreement_is_judged_on_the_lower_bound_not_the_point_estimate() -> None:
    """100 of 100 agree (point estimate 1.0), but the lower bound is under 0.99: not yet a pass."""
    few = simulated(random.Random(4), 2, 0, compared=100)
    result = agreement_gate(few, BOUNDS)
    assert result.verdict is Verdict.INCONCLUSIVE and result.measured is not None and result.measured < 0.99


def test_the_shadow_step_counts_failed_copies_as_errors() -> None:
    rng = random.Random(5)
    base = simulated(rng, 1, 1000)
    failing = simulated(rng, 2, 0, compared=900).model_copy(
        update={"comparisons": CopyComparisons(compared=900, agreed=900, failed=100)}
    )
    result = error_gate(failing, base, BOUNDS, copies=True)
    assert result.verdict is Verdict.FAIL and result.measured is not None and 0.05 < result.measured < 0.1
    assert shadow_decision(failing, base, BOUNDS).verdict is Verdict.FAIL


def test_one_look_at_two_samples_of_one_latency_distribution_never_fails() -> None:
    """The issue's figure: two samples of one lognormal, 230 candidate vs 4,500 production answers;
    the point p99 ratio failed 47 of 500 such looks. The anytime-valid p99 gate fails none (and at
    its alpha of 0.0005 should fail about none of 500)."""
    rng = random.Random(47)
    failed = 0
    for _ in range(500):
        candidate, production = simulated(rng, 2, 230, error_rate=0.0), simulated(rng, 1, 4500, error_rate=0.0)
        failed += latency_gate(candidate, production, BOUNDS).verdict is Verdict.FAIL
    assert failed == 0


def test_an_identical_candidate_fails_no_gate_looked_at_every_tick_of_a_long_step() -> None:
    """Two samples of one version (errors, lognormal latency, Beta(2, 5) scores, identical answers)
    growing by 100 answers each side a tick, judged at every one of 100 ticks, 10 times over: no
    gate fails (each gate's alpha, 0.0005, bounds its failure over all the looks of a step)."""
    rng = random.Random(11)
    failures = []
    for _ in range(10):
        candidate, production = simulated(rng, 2, 0), simulated(rng, 1, 0)
        for _ in range(100):
            candidate = candidate.merge(simulated(rng, 2, 100, compared=100))
            production = production.merge(simulated(rng, 1, 100))
            decision = canary_decision(candidate, production, BOUNDS)
            failures += [g for g in decision.gates if g.verdict is Verdict.FAIL]
    assert failures == []


def test_a_policy_reads_from_yaml_with_defaults_and_refuses_bad_weights(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("canary_weights: [10, 50]\ncanary_bake_s: 2\ngates:\n  threshold: 0.5\n")
    policy = ReleasePolicy.from_yaml(path)
    assert policy.canary_weights == (10, 50) and policy.gates.threshold == 0.5 and policy.shadow_bake_s == 300.0
    path.write_text("canary_weights: [50, 10]\n")
    with pytest.raises(ValueError, match="must not decrease"):
        ReleasePolicy.from_yaml(path)
    path.write_text("bake: 3\n")
    with pytest.raises(ValueError, match="bake"):
        ReleasePolicy.from_yaml(path)
