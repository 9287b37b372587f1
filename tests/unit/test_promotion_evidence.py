"""Guarded promotion: evidence from the evidence recorder over one window for both versions, and the verdict."""

from __future__ import annotations

import pytest

from server.admin_cli import evidence_table
from server.evidence.load import LoadEvidence
from server.evidence.recorder import MemoryEvidenceRecorder
from server.evidence.summary import histogram_quantile
from server.evidence.windows import EvidenceWindows
from server.registry.controller import evidence_view
from server.registry.promotion import PromotionRequirements, gather, shortfalls
from tests.fakes import ManualClock, fake_manifest


def record(load: LoadEvidence, code: int, latency_s: float, times: int) -> None:
    for _ in range(times):
        load.answered(code, latency_s)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    assert histogram_quantile(0.5, {0.1: 0.0, 0.2: 10.0, float("inf"): 10.0}) == pytest.approx(0.15)
    assert histogram_quantile(0.99, {0.1: 5.0, float("inf"): 10.0}) == 0.1
    assert histogram_quantile(0.99, {}) is None


async def test_evidence_meets_or_misses_each_requirement_with_the_measured_value() -> None:
    recorder = MemoryEvidenceRecorder(clock=ManualClock())
    production = recorder.open_load(fake_manifest("m", 1))
    candidate = recorder.open_load(fake_manifest("m", 2))
    record(production, 200, 0.004, 500)
    record(candidate, 200, 0.004, 95)  # as fast
    record(candidate, 500, 0.004, 5)
    for index in range(200):
        candidate.compared(agreed=index < 198, difference=0.0)
    evidence = await gather(recorder, "m", candidate=2, production=1)
    assert (evidence.candidate.requests, evidence.candidate.errors) == (100, 5)
    assert evidence.observed == 300 and evidence.shadow_agreement == pytest.approx(0.99)
    assert evidence.p99_ratio == pytest.approx(1.0)

    met = PromotionRequirements(min_requests=300, min_agreement=0.98, max_p99_ratio=1.5, max_error_ratio=0.05)
    assert shortfalls(met, evidence) == []
    strict = PromotionRequirements(min_requests=1000, min_agreement=0.995, max_p99_ratio=0.5, max_error_ratio=0.01)
    assert shortfalls(strict, evidence) == [
        "observed 300 requests (canary answers + shadow comparisons), requires 1000",
        "shadow agreement 0.99 over 200 comparisons, requires >= 0.995",
        "p99 ratio to production 1, requires <= 0.5",
        "error ratio 0.05 over 100 answers, requires <= 0.01",
    ]


async def test_no_evidence_yet_falls_short_of_any_ratio_requirement() -> None:
    evidence = await gather(MemoryEvidenceRecorder(), "m", candidate=2, production=1)
    verdict = shortfalls(PromotionRequirements(min_agreement=0.9, max_error_ratio=0.1), evidence)
    assert verdict == [
        "shadow agreement none yet over 0 comparisons, requires >= 0.9",
        "error ratio none yet over 0 answers, requires <= 0.1",
    ]


async def test_production_is_judged_over_the_candidates_window_not_its_whole_life() -> None:
    clock = ManualClock(10_000.0)
    recorder = MemoryEvidenceRecorder(EvidenceWindows(bucket_s=10.0, buckets=1000), clock=clock)
    production = recorder.open_load(fake_manifest("m", 1))
    record(production, 200, 0.400, 1000)  # an hour of slow answers before the candidate came
    clock.now += 3600
    candidate = recorder.open_load(fake_manifest("m", 2))
    record(production, 200, 0.004, 200)
    record(candidate, 200, 0.004, 20)
    evidence = await gather(recorder, "m", candidate=2, production=1)
    assert evidence.production is not None and evidence.production.requests == 200
    assert evidence.p99_ratio == pytest.approx(1.0)  # over its whole life production's p99 is 100x
    assert evidence.since == candidate.loaded_at // 10 * 10 and evidence.until > evidence.since


async def test_the_cli_shows_the_window_both_versions_were_measured_over() -> None:
    recorder = MemoryEvidenceRecorder(clock=ManualClock(1_000_003.0))
    recorder.open_load(fake_manifest("m", 2))
    table = evidence_table(evidence_view(await gather(recorder, "m", candidate=2, production=1)))
    (row,) = [line for line in table.splitlines() if line.startswith("window (both versions)")]
    assert row.endswith(" 1970-01-12 13:46:40 to 1970-01-12 13:46:50 UTC")
