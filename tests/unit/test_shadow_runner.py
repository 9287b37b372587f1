"""ShadowRunner: copies run after the primary, through a bounded queue; drops and failures are counted."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.contract.manifest import BatchingPolicy
from server.evidence.summary import CopyComparisons
from server.metrics.instruments import Metrics
from server.registry.served import ServedVersion
from server.routing.agreement import Agreement
from server.routing.table import ShadowRoute
from server.shadow import ShadowRunner, _largest_difference
from tests.fakes import EchoRuntime, FailingRuntime, ManualClock, SlowRuntime, fake_manifest, request, until

HANG_GUARD_S = 30


def outcome(metrics: Metrics, name: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "hotserve_shadow_requests_total", {"model": "m", "version": "2", "outcome": name}
        )
        or 0.0
    )


def comparisons(shadow: ServedVersion) -> CopyComparisons:
    """What the evidence of the shadow version's load says of its copies."""
    return shadow.evidence.summary().comparisons


async def test_copies_are_compared_and_agreement_is_counted() -> None:
    metrics = Metrics()
    shadow = ServedVersion(fake_manifest("m", 2), EchoRuntime(), metrics)
    runner = ShadowRunner(metrics, max_pending=8)
    runner.start()
    x = np.ones((2, 3), np.float32)
    route = ShadowRoute(shadow, share=1.0, agreement=Agreement(tolerance=1e-6))
    runner.offer(route, request({"x": x}), {"y": x})  # the echo agrees
    runner.offer(route, request({"x": x}), {"y": x + 1})  # a primary that differs
    await until(lambda: comparisons(shadow).compared == 2)
    evidence = comparisons(shadow)
    assert (evidence.agreed, evidence.agreement, evidence.max_abs_difference) == (1, 0.5, 1.0)
    assert (
        metrics.registry.get_sample_value(
            "hotserve_shadow_agreements_total", {"model": "m", "version": "2", "result": "agree"}
        )
        == 1
    )
    assert shadow.leases == 0
    await runner.close()
    await shadow.close(5)


async def test_copies_beyond_the_in_flight_bound_are_dropped_and_counted() -> None:
    metrics = Metrics()
    runtime = SlowRuntime()
    shadow = ServedVersion(fake_manifest("m", 2), runtime, metrics)
    runner = ShadowRunner(metrics, max_pending=2)
    runner.start()
    route = ShadowRoute(shadow, share=1.0, agreement=Agreement(tolerance=0.0))
    x = np.zeros((1, 3), np.float32)
    runner.offer(route, request({"x": x}), {"y": x})
    await until(lambda: shadow.batcher.running == 1)  # the shadow's one worker is stuck on the gate
    for _ in range(5):
        runner.offer(route, request({"x": x}), {"y": x})
    assert (outcome(metrics, "dropped"), comparisons(shadow).dropped) == (4, 4)  # 2 in flight
    runtime.gate.set()
    await until(lambda: comparisons(shadow).compared == 2)
    assert shadow.leases == 0
    await runner.close()
    await shadow.close(5)


async def test_a_failing_shadow_is_counted_and_its_lease_returned() -> None:
    metrics = Metrics()
    shadow = ServedVersion(fake_manifest("m", 2), FailingRuntime(), metrics)
    runner = ShadowRunner(metrics, max_pending=4)
    runner.start()
    x = np.zeros((1, 3), np.float32)
    runner.offer(ShadowRoute(shadow, 1.0, Agreement(tolerance=0.0)), request({"x": x}), {"y": x})
    await until(lambda: comparisons(shadow).failed == 1)
    assert outcome(metrics, "failed") == 1 and shadow.leases == 0
    await runner.close()
    await shadow.close(5)


async def test_copies_cancelled_by_close_before_they_start_return_their_leases() -> None:
    metrics = Metrics()
    shadow = ServedVersion(fake_manifest("m", 2), EchoRuntime(), metrics)
    runner = ShadowRunner(metrics, max_pending=8)
    runner.start()
    x = np.zeros((1, 3), np.float32)
    for _ in range(3):  # offered, not yet started: close cancels them before their first step
        runner.offer(ShadowRoute(shadow, 1.0, Agreement(tolerance=0.0)), request({"x": x}), {"y": x})
    assert shadow.leases == 3
    await runner.close()
    assert shadow.leases == 0 and comparisons(shadow).compared == 0
    assert await shadow.drain(0.0)  # nothing left for a swap or a shutdown to wait for
    await shadow.close(5)


async def test_a_copy_yields_to_a_primary_with_requests_waiting_unless_told_not_to() -> None:
    metrics = Metrics()
    held = SlowRuntime()
    primary = ServedVersion(fake_manifest("m", 1), held, metrics)
    shadow = ServedVersion(fake_manifest("m", 2), EchoRuntime(), metrics)
    x = np.zeros((1, 3), np.float32)
    route = ShadowRoute(shadow, share=1.0, agreement=Agreement(tolerance=0.0))
    answers = [asyncio.ensure_future(primary.infer(request({"x": x})))]
    await until(lambda: primary.batcher.running == 1)  # the primary's one worker is held on the gate
    answers.append(asyncio.ensure_future(primary.infer(request({"x": x}))))
    await until(lambda: primary.batcher.queued == 1)  # and a request waits for it

    yielding, eager = ShadowRunner(metrics, max_pending=8), ShadowRunner(metrics, max_pending=8, yield_to_primary=False)
    for runner in (yielding, eager):
        runner.start()
        runner.offer(route, request({"x": x}), {"y": x}, answered_by=primary)
    assert comparisons(shadow).dropped == 1  # the yielding runner's copy
    await until(lambda: comparisons(shadow).compared == 1)  # the eager one's ran anyway

    held.gate.set()
    await asyncio.gather(*answers)
    yielding.offer(route, request({"x": x}), {"y": x}, answered_by=primary)  # the primary is idle now
    await until(lambda: comparisons(shadow).compared == 2)
    assert outcome(metrics, "dropped") == 1 and shadow.leases == 0
    for runner in (yielding, eager):
        await runner.close()
    await primary.close(5)
    await shadow.close(5)


async def test_a_shadow_over_its_share_of_inference_time_gets_no_copies_until_it_falls_back() -> None:
    metrics = Metrics()
    clock = ManualClock()
    primary = ServedVersion(fake_manifest("m", 1), EchoRuntime(), metrics)
    shadow = ServedVersion(fake_manifest("m", 2), EchoRuntime(), metrics)
    runner = ShadowRunner(metrics, max_pending=8, max_inference_share=0.5, clock=clock)
    runner.start()
    x = np.zeros((1, 3), np.float32)
    route = ShadowRoute(shadow, share=1.0, agreement=Agreement(tolerance=0.0))

    def spend(primary_s: float, shadow_s: float) -> None:
        """Batches that ran this long on workers in the window (as the batchers count it)."""
        primary.batcher._busy_s += primary_s
        shadow.batcher._busy_s += shadow_s
        clock.now += 1.0

    runner.offer(route, request({"x": x}), {"y": x}, answered_by=primary)  # first window: admitted
    await until(lambda: comparisons(shadow).compared == 1)
    spend(primary_s=1.0, shadow_s=3.0)  # the shadow took 75% of the pair's inference time
    runner.offer(route, request({"x": x}), {"y": x}, answered_by=primary)
    assert comparisons(shadow).dropped == 1
    spend(primary_s=1.0, shadow_s=0.5)  # 33%: under the ceiling again
    runner.offer(route, request({"x": x}), {"y": x}, answered_by=primary)
    await until(lambda: comparisons(shadow).compared == 2)
    await runner.close()
    await primary.close(5)
    await shadow.close(5)


async def test_a_copy_larger_than_one_batch_is_split_and_compared() -> None:
    metrics = Metrics()
    manifest = fake_manifest("m", 2, batching=BatchingPolicy(max_batch_size=4, allow_split=True))
    shadow = ServedVersion(manifest, EchoRuntime(), metrics)
    runner = ShadowRunner(metrics, max_pending=8)
    runner.start()
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    runner.offer(ShadowRoute(shadow, 1.0, Agreement(tolerance=0.0)), request({"x": x}), {"y": x})
    await until(lambda: comparisons(shadow).compared == 1 and runner.pending == 0)
    assert (comparisons(shadow).agreed, shadow.leases) == (1, 0)
    await runner.close()
    await shadow.close(5)


async def test_a_copy_the_shadows_full_queue_refuses_is_dropped_not_failed() -> None:
    metrics = Metrics()
    runtime = SlowRuntime()
    manifest = fake_manifest("m", 2, batching=BatchingPolicy(max_batch_size=1, max_queue_size=1))
    shadow = ServedVersion(manifest, runtime, metrics)
    runner = ShadowRunner(metrics, max_pending=8, yield_to_primary=False)
    runner.start()
    x = np.zeros((1, 3), np.float32)
    route = ShadowRoute(shadow, 1.0, Agreement(tolerance=0.0))
    runner.offer(route, request({"x": x}), {"y": x})  # runs, held at the gate
    await until(lambda: shadow.batcher.running == 1)
    runner.offer(route, request({"x": x}), {"y": x})  # queued
    runner.offer(route, request({"x": x}), {"y": x})  # the queue is full: refused at once
    assert (outcome(metrics, "dropped"), outcome(metrics, "failed"), comparisons(shadow).dropped) == (1, 0, 1)
    runtime.gate.set()
    await until(lambda: comparisons(shadow).compared == 2 and runner.pending == 0)
    assert shadow.leases == 0
    await runner.close()
    await shadow.close(5)


@pytest.mark.parametrize(
    ("expected", "got", "largest"),
    [
        ([0.25, 1.0, -3.0], [0.25, 1.5, -1.0], 2.0),
        ([1.0, float("nan")], [1.25, 2.0], 0.25),  # a NaN difference is skipped while others are numbers
        ([float("nan")], [float("nan")], float("inf")),  # nothing but NaN: no agreement can be claimed
        ([3, 7], [1, 9], 2.0),  # integers
        ([True, False], [True, True], 1.0),  # booleans
    ],
)
def test_small_outputs_compared_in_python_give_what_numpy_gives(
    expected: list[float], got: list[float], largest: float
) -> None:
    small_expected, small_got = np.array(expected), np.array(got)
    # The same values repeated past the small-output limit take numpy's path.
    large_expected, large_got = np.tile(small_expected, 20), np.tile(small_got, 20)
    assert _largest_difference(small_expected, small_got) == largest
    assert _largest_difference(large_expected, large_got) == largest
