"""Releases simulated through the real driver loop: every tick, every step, the default gates, a
hand-moved clock, fake traffic answered into the real evidence recorder, latencies drawn from a
recorded heavy-tailed distribution (tests/unit/data/recorded_latency_us.txt). The harness is
load_tests/release_simulation.py, which also prints the figures in docs/release.md."""

from __future__ import annotations

import pytest

from load_tests.release_simulation import (
    Candidate,
    LatencySource,
    evidence_suffices,
    policy_with_bake,
    recorded_latencies,
    run,
)
from server.release.record import schedule


def test_a_a_releases_are_promoted_in_at_least_99_of_100() -> None:
    """The candidate is production's twin. 100 releases of the default policy with 30 s bakes at
    100 requests/s (about 175 ticks each, every gate judged on each); the gates' false-alarm
    probability over a release is at most 1%, so 99 of 100 is the bound, not the expectation."""
    outcomes = run(100, "same", rate=100.0, bake_s=30.0, seed=1)
    promoted = [o for o in outcomes if o.state == "promoted"]
    assert len(promoted) >= 99, [o for o in outcomes if o.state != "promoted"]


@pytest.mark.parametrize(
    ("candidate", "rate", "gate"),
    [("errors", 100.0, "error_rate"), ("flips", 100.0, "agreement"), ("slow", 5000.0, "p99_ratio")],
)
def test_a_bad_candidate_is_rolled_back_by_the_end_of_the_step_where_the_evidence_first_suffices(
    candidate: Candidate, rate: float, gate: str
) -> None:
    """At the default policy (bakes of 300 s): 2% errors and 3% flipped decisions show on the
    shadow's copies; a 1.5x slower candidate only in its answers, and its p99 against a 1.3 bound
    takes tens of thousands of them (the recorded tail is steep), hence 5,000 requests/s. The step
    where the evidence suffices is where the gate rejects the step's noiseless (expected) evidence."""
    policy = policy_with_bake(300.0)
    suffices = evidence_suffices(policy, candidate, rate, LatencySource(recorded_latencies()))
    assert suffices is not None
    labels = [step.label for step in schedule(policy)]
    (outcome,) = run(1, candidate, rate, bake_s=300.0, seed=11)
    print(f"{candidate}: {outcome}; the evidence suffices in {suffices}")
    assert outcome.state == "rolled_back" and gate in outcome.failed, outcome
    assert labels.index(outcome.step) <= labels.index(suffices), (outcome, suffices)
