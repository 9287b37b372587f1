"""The batch-forming decision, as pure math: no asyncio, no clock."""

from __future__ import annotations

import pytest

from server.batching.policy import BatchConfig, Decision, decide
from server.contract.manifest import BatchingPolicy


def config(**policy: object) -> BatchConfig:
    return BatchConfig.from_policy(BatchingPolicy(**policy))  # type: ignore[arg-type]


def test_config_converts_delay_to_seconds_and_preferred_to_a_set() -> None:
    cfg = config(max_batch_size=16, max_queue_delay_ms=2.5, preferred_batch_sizes=[4, 8])
    assert cfg.max_queue_delay_s == pytest.approx(0.0025)
    assert cfg.preferred_sizes == frozenset({4, 8})


def test_idle_arrival_goes_at_once_even_with_a_long_delay() -> None:
    cfg = config(max_batch_size=8, max_queue_delay_ms=10_000)
    assert decide([3], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=True) == Decision(
        take=1, reason="idle"
    )


def test_queue_reaching_max_batch_size_is_full() -> None:
    cfg = config(max_batch_size=8, max_queue_delay_ms=10_000)
    assert decide([2, 2, 4, 1], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=False) == Decision(
        take=3, reason="full"
    )


def test_next_request_not_fitting_makes_the_batch_full() -> None:
    cfg = config(max_batch_size=8, max_queue_delay_ms=10_000)
    assert decide([3, 3, 5], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=False) == Decision(
        take=2, reason="full"
    )


def test_marker_above_max_batch_size_ends_the_batch_as_full() -> None:
    cfg = config(max_batch_size=8, max_queue_delay_ms=10_000)
    assert decide([1, 9], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=False) == Decision(
        take=1, reason="full"
    )


def test_largest_reachable_preferred_size_goes_before_the_delay() -> None:
    cfg = config(max_batch_size=16, max_queue_delay_ms=10_000, preferred_batch_sizes=[2, 4])
    assert decide([1, 1, 2, 1], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=False) == Decision(
        take=3, reason="preferred"
    )


def test_preferred_size_must_be_hit_exactly_by_whole_requests() -> None:
    cfg = config(max_batch_size=16, max_queue_delay_ms=5, preferred_batch_sizes=[4])
    decision = decide([3, 3], config=cfg, oldest_enqueued_at=100.0, now=100.001, idle_arrival=False)
    assert decision == Decision(take=0, wake_at=pytest.approx(100.005))


def test_partial_batch_waits_until_delay_after_oldest_arrival() -> None:
    cfg = config(max_batch_size=8, max_queue_delay_ms=2)
    waiting = decide([1, 1], config=cfg, oldest_enqueued_at=100.0, now=100.0005, idle_arrival=False)
    assert waiting.take == 0
    assert waiting.wake_at == pytest.approx(100.002)


def test_partial_batch_goes_once_the_delay_has_passed() -> None:
    cfg = config(max_batch_size=8, max_queue_delay_ms=2)
    assert decide([1, 1], config=cfg, oldest_enqueued_at=100.0, now=100.002, idle_arrival=False) == Decision(
        take=2, reason="delay"
    )


def test_zero_delay_never_waits() -> None:
    cfg = config(max_batch_size=8, max_queue_delay_ms=0)
    assert decide([1], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=False) == Decision(
        take=1, reason="delay"
    )


def test_disabled_batching_takes_one_request_without_waiting() -> None:
    cfg = config(enabled=False, max_batch_size=8, max_queue_delay_ms=10_000)
    assert decide([1, 1, 1], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=False) == Decision(
        take=1, reason="full"
    )
    assert decide([1], config=cfg, oldest_enqueued_at=100.0, now=100.0, idle_arrival=True) == Decision(
        take=1, reason="idle"
    )


def test_head_larger_than_max_batch_size_is_a_caller_bug() -> None:
    cfg = config(max_batch_size=4)
    with pytest.raises(ValueError):
        decide([5], config=cfg, oldest_enqueued_at=0.0, now=0.0, idle_arrival=False)
