"""Guarded promotion: evidence from this replica's own metrics and shadow runner, and the verdict."""

from __future__ import annotations

import pytest

from server.metrics.instruments import Metrics
from server.registry.promotion import PromotionRequirements, gather, histogram_quantile, shortfalls
from server.shadow import ShadowEvidence


def record(metrics: Metrics, version: str, code: str, latency_s: float, times: int) -> None:
    for _ in range(times):
        metrics.requests.labels("m", version, "v2", code).inc()
        metrics.request_duration.labels("m", version, "v2").observe(latency_s)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    assert histogram_quantile(0.5, {0.1: 0.0, 0.2: 10.0, float("inf"): 10.0}) == pytest.approx(0.15)
    assert histogram_quantile(0.99, {0.1: 5.0, float("inf"): 10.0}) == 0.1
    assert histogram_quantile(0.99, {}) is None


def test_evidence_meets_or_misses_each_requirement_with_the_measured_value() -> None:
    metrics = Metrics()
    record(metrics, "1", "200", 0.004, 500)  # production
    record(metrics, "2", "200", 0.004, 95)  # candidate, as fast
    record(metrics, "2", "500", 0.004, 5)
    shadow = ShadowEvidence(compared=200, agreed=198)
    evidence = gather(metrics, shadow, "m", candidate=2, production=1)
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


def test_no_evidence_yet_falls_short_of_any_ratio_requirement() -> None:
    evidence = gather(Metrics(), ShadowEvidence(), "m", candidate=2, production=1)
    verdict = shortfalls(PromotionRequirements(min_agreement=0.9, max_error_ratio=0.1), evidence)
    assert verdict == [
        "shadow agreement none yet over 0 comparisons, requires >= 0.9",
        "error ratio none yet over 0 answers, requires <= 0.1",
    ]
