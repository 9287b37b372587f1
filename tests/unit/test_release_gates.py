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
    Verdict,
    agreement_gate,
    canary_decision,
    error_gate,
    latency_gate,
    shadow_decision,
    wilson_bounds,
)
from server.release.policy import GateBounds, ReleasePolicy

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


def test_wilson_bounds_contain_the_estimate_and_narrow_with_samples() -> None:
    low_10, high_10 = wilson_bounds(10, 10, 1.645)
    low_1000, high_1000 = wilson_bounds(1000, 1000, 1.645)
    assert high_10 == pytest.approx(1.0) and high_1000 == pytest.approx(1.0)
    assert low_10 < 0.8 < 0.99 < low_1000
    assert wilson_bounds(0, 0, 1.645) == (0.0, 1.0)


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
        ({"latency_scale": 1.5}, "p99_ratio"),
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
    assert latency_gate(simulated(rng, 2, 50), simulated(rng, 1, 5000), BOUNDS).measured is None


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
    assert result.verdict is Verdict.FAIL and result.measured == pytest.approx(0.1)
    assert shadow_decision(failing, base, BOUNDS).verdict is Verdict.FAIL


def test_a_a_releases_are_promoted_in_at_least_19_of_20_simulated_runs() -> None:
    """A simulation, not a replay of real traffic: in each of 20 runs the candidate is the same
    model as production (same error rate, latency and score distributions, identical answers on
    the copies it is compared on), with the evidence of a shadow step and three canary steps at
    the default minimum samples; a run is promoted when every step passes."""
    promoted = 0
    for run in range(20):
        rng = random.Random(1000 + run)
        steps = [shadow_decision(as_shadow(simulated(rng, 2, 400, compared=400)), simulated(rng, 1, 400), BOUNDS)]
        for share in (5, 25, 50):
            candidate_n = 400
            production_n = candidate_n * (100 - share) // share
            steps.append(
                canary_decision(simulated(rng, 2, candidate_n, compared=400), simulated(rng, 1, production_n), BOUNDS)
            )
        if all(step.verdict is Verdict.PASS for step in steps):
            promoted += 1
    assert promoted >= 19, f"{promoted} of 20 A/A runs promoted"


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
