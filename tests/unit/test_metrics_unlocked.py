"""The lock-free request-path instruments expose exactly what prometheus_client's would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from server.metrics.unlocked import UnlockedCounter, UnlockedHistogram

BUCKETS = (0.0005, 0.001, 0.01, 1.0, 10.0)


def exposition(registry: CollectorRegistry) -> str:
    """The text format with creation times masked (they differ by construction time)."""
    return re.sub(r"_created\{([^}]*)\} \S+", r"_created{\1} T", generate_latest(registry).decode())


def test_the_exposition_is_the_libraries_own_for_the_same_updates() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("x_requests", "Requests.", ["model", "code"], registry=theirs)
    histogram = Histogram("x_duration_seconds", "Latency.", ["model"], buckets=BUCKETS, registry=theirs)
    unlocked_counter = UnlockedCounter("x_requests", "Requests.", ["model", "code"], registry=ours)
    unlocked_histogram = UnlockedHistogram("x_duration_seconds", "Latency.", ["model"], buckets=BUCKETS, registry=ours)
    # On a bound, between bounds, below the first, above the last: `le` is inclusive.
    for model, value in [("a", 0.0001), ("a", 0.0005), ("a", 0.002), ("b", 0.5), ("b", 20.0), ("a", 1.0)]:
        counter.labels(model, "200").inc()
        unlocked_counter.labels(model, "200").inc()
        histogram.labels(model).observe(value)
        unlocked_histogram.labels(model).observe(value)
    counter.labels("a", "500").inc(2)
    unlocked_counter.labels("a", "500").inc(2)

    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("x_duration_seconds_bucket", {"model": "a", "le": "0.0005"}) == 2.0
    assert ours.get_sample_value("x_requests_total", {"model": "a", "code": "500"}) == 2.0


def test_a_wrong_number_of_label_values_is_refused() -> None:
    counter = UnlockedCounter("y_requests", "Requests.", ["model", "code"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("a")


def test_a_name_already_registered_is_refused_as_for_any_collector() -> None:
    registry = CollectorRegistry()
    Counter("z_requests", "Requests.", ["model"], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        UnlockedCounter("z_requests", "Requests.", ["model"], registry=registry)
