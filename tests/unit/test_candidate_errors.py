"""A candidate's errors against production's: every 5xx, and the 4xx production did not give on the
same protocol (route), recorded per load by protocol and status class and summed like the rest."""

from __future__ import annotations

import json

import numpy as np

from server.evidence.load import LoadEvidence
from server.evidence.recorder import MemoryEvidenceRecorder
from server.evidence.summary import AnswerClasses, WindowSummary, candidate_errors
from server.evidence.windows import EvidenceWindows
from server.release.gates import Verdict, error_gate
from server.release.policy import GateBounds
from tests.fakes import ManualClock, fake_manifest


def answer(load: LoadEvidence, status: int, protocol: str, times: int) -> None:
    for _ in range(times):
        load.answered(status, 0.002, protocol)


def summary(version: int, **protocols: tuple[int, int, int]) -> WindowSummary:
    """A window whose answers per protocol are (2xx, 4xx, 5xx)."""
    classes = {p: AnswerClasses(ok=ok, client_errors=c, server_errors=s) for p, (ok, c, s) in protocols.items()}
    return WindowSummary(
        model="fraud",
        version=version,
        since=0.0,
        until=10.0,
        requests=sum(a.total for a in classes.values()),
        errors=sum(a.server_errors for a in classes.values()),
        by_protocol=classes,
    )


async def test_answers_are_recorded_by_protocol_and_status_class_and_merge_across_replicas() -> None:
    clock = ManualClock()
    recorder = MemoryEvidenceRecorder(EvidenceWindows(10.0, 6), clock=clock)
    load = recorder.open_load(fake_manifest("fraud", 2))
    answer(load, 200, "v2", 5)
    answer(load, 400, "v1", 3)
    answer(load, 429, "v1", 1)
    clock.now += 10.0  # the next bucket: a window sums both
    answer(load, 200, "v1", 2)
    answer(load, 503, "grpc", 1)
    mine = await recorder.summary("fraud", 2)
    assert (mine.requests, mine.errors) == (12, 1)
    assert mine.by_protocol == {
        "grpc": AnswerClasses(server_errors=1),
        "v1": AnswerClasses(ok=2, client_errors=4),
        "v2": AnswerClasses(ok=5),
    }
    # Through the fleet's store as JSON, then summed with another replica's window.
    theirs = WindowSummary.from_json(json.loads(json.dumps(mine.to_json())))
    assert theirs == mine
    fleet = mine.merge(summary(2, v1=(10, 1, 0), v3=(1, 0, 0)))
    assert fleet.by_protocol["v1"] == AnswerClasses(ok=12, client_errors=5)
    assert fleet.by_protocol["v2"] == AnswerClasses(ok=5) and fleet.by_protocol["v3"] == AnswerClasses(ok=1)


def test_4xx_production_does_not_give_on_the_same_route_are_errors() -> None:
    """The issue's candidate: no feature spec, so every v1 record it gets is a 400; production
    answers v1 with 200. Its v2 answers are fine."""
    production = summary(1, v1=(1900, 0, 0), v2=(1900, 0, 0))
    candidate = summary(2, v1=(0, 100, 0), v2=(100, 0, 0))
    errors, total = candidate_errors(candidate, production)
    assert total == 200 and 90 <= errors <= 100
    gate = error_gate(candidate, production, GateBounds())
    assert gate.verdict is Verdict.FAIL, gate
    assert candidate.errors == 0  # what the gate counted before: 5xx only, so it passed


def test_a_clients_malformed_requests_refused_by_both_versions_are_not_errors() -> None:
    production = summary(1, v1=(1805, 95, 0), v2=(1900, 0, 2))  # 5% of v1 records malformed
    candidate = summary(2, v1=(95, 5, 0), v2=(100, 0, 0))
    assert candidate_errors(candidate, production) == (0, 200)
    assert error_gate(candidate, production, GateBounds()).verdict is Verdict.PASS
    # 5xx always count, on any route.
    assert candidate_errors(summary(2, v1=(95, 5, 3), v2=(100, 0, 1)), production) == (4, 204)


def test_4xx_on_a_route_production_answered_nothing_on_are_not_judged() -> None:
    production = summary(1, v2=(2000, 0, 0), grpc=(0, 40, 0))
    candidate = summary(2, v1=(0, 30, 0), grpc=(0, 10, 0), v2=(160, 0, 0))
    assert candidate_errors(candidate, production) == (0, 200)


def test_identical_versions_with_malformed_clients_rarely_count_an_error_and_then_few() -> None:
    """Two samples of one version (the same 4xx share on a route) at canary and shadow-sized
    windows: an error is counted in at most 1 window in 500, and enough to fail the gate at the
    default bounds in at most 1 in 5,000 (one sample draws a 3.9-sigma difference of shares); a
    candidate refusing the route is counted nearly in full."""
    rng = np.random.default_rng(20240601)
    windows = 0
    counted = 0
    failed = 0
    for share in (0.001, 0.01, 0.05, 0.2):
        for n, big_n in ((200, 3800), (1000, 3000), (2500, 2500), (50, 950)):
            for _ in range(1000):
                c, b = int(rng.binomial(n, share)), int(rng.binomial(big_n, share))
                production = summary(1, v1=(big_n - b, b, 0))
                candidate = summary(2, v1=(n - c, c, 0))
                errors, _ = candidate_errors(candidate, production)
                windows += 1
                counted += errors > 0
                failed += error_gate(candidate, production, GateBounds()).verdict is Verdict.FAIL
            broken = summary(2, v1=(0, n, 0))
            errors, _ = candidate_errors(broken, summary(1, v1=(big_n - int(share * big_n), int(share * big_n), 0)))
            assert errors >= 0.8 * n * (1 - share) - 3, (share, n, errors)
    assert counted <= windows // 500 and failed <= windows // 5000, (counted, failed)
