"""The dynamic batcher against fake runtimes: rows, reasons, admission, deadlines, failures, drain.

Time is driven by `threading.Event` gates on the runtime, never by sleeps; `asyncio.wait_for`
only guards against hangs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import numpy as np
import pytest

from server.batching.batcher import Batcher
from server.contract.manifest import BatchingPolicy
from server.errors import DeadlineExceeded, InferenceFailed, InvalidInput, ModelNotReady, Overloaded
from server.metrics.instruments import Metrics
from server.runtime.base import Runtime
from server.runtime.executor import INLINE_MIN_RUNS, RuntimeExecutor
from tests.fakes import EchoRuntime, FailingRuntime, SlowRuntime, fake_manifest, request, until

T = TypeVar("T")
HANG_GUARD_S = 20.0
LONG_DELAY_MS = 600_000.0  # a partial batch would wait ten minutes: only other rules can send it


BatcherFactory = Callable[..., tuple[Batcher, Metrics]]


@pytest.fixture
def make_batcher() -> Iterator[BatcherFactory]:
    executors: list[RuntimeExecutor] = []

    def factory(runtime: Runtime, features: int = 3, **policy: object) -> tuple[Batcher, Metrics]:
        manifest = fake_manifest(features=features, batching=BatchingPolicy(**policy))  # type: ignore[arg-type]
        executor = RuntimeExecutor(runtime, manifest.batching.instances, "test-batcher")
        executors.append(executor)
        metrics = Metrics()
        return Batcher(manifest, executor, metrics), metrics

    yield factory
    for runtime_executor in executors:
        if isinstance(runtime_executor.runtime, SlowRuntime):
            runtime_executor.runtime.gate.set()
        runtime_executor.shutdown(wait=True)


def rows_of(request_id: int, rows: int, features: int = 3) -> dict[str, np.ndarray]:
    """Rows that identify their request: value = request_id * 1000 + row * 10 + column."""
    base = request_id * 1000 + np.arange(rows)[:, None] * 10 + np.arange(features)[None, :]
    return {"x": base.astype(np.float32)}


def batches(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "hotserve_batches_total", {"model": "echo", "version": "1", "reason": reason}
    )
    return value or 0.0


async def guarded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD_S)


def submit(
    batcher: Batcher, request_id: int, rows: int, deadline: float | None = None
) -> asyncio.Task[dict[str, np.ndarray]]:
    return asyncio.create_task(batcher.submit(request(rows_of(request_id, rows), rows, deadline)))


async def occupy(batcher: Batcher, request_id: int, rows: int) -> asyncio.Task[dict[str, np.ndarray]]:
    """Submit a request and wait until it holds the (only) worker, so later ones queue."""
    task = submit(batcher, request_id, rows)
    await until(lambda: batcher.running == 1)
    return task


async def test_each_caller_gets_exactly_its_own_rows_under_concurrency(make_batcher: BatcherFactory) -> None:
    runtime = EchoRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=1, instances=2, max_queue_size=1000)
    sizes = [1 + (i * 7) % 5 for i in range(300)]
    results = await guarded(
        asyncio.gather(*(batcher.submit(request(rows_of(i, n), n, None)) for i, n in enumerate(sizes)))
    )
    for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(out["y"], rows_of(i, n)["x"])
    assert sum(runtime.batch_rows) == sum(sizes)
    assert max(runtime.batch_rows) > max(sizes), "requests were never batched together"
    assert max(runtime.batch_rows) <= 8


async def test_idle_batcher_dispatches_a_lone_request_at_once(make_batcher: BatcherFactory) -> None:
    runtime = EchoRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=LONG_DELAY_MS)
    out = await guarded(batcher.submit(request(rows_of(1, 2), 2, None)))
    np.testing.assert_array_equal(out["y"], rows_of(1, 2)["x"])
    assert batches(metrics, "idle") == 1
    assert runtime.batch_rows == [2]


async def test_requests_reaching_an_idle_batcher_in_one_loop_turn_share_its_batch(make_batcher: BatcherFactory) -> None:
    runtime = EchoRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=LONG_DELAY_MS)
    tasks = [submit(batcher, i, 2) for i in range(3)]  # all submit before the loop turns
    results = await guarded(asyncio.gather(*tasks))
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], rows_of(i, 2)["x"])
    assert runtime.batch_rows == [6]
    assert batches(metrics, "idle") == 1


async def test_full_batch_dispatches_before_the_delay(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=4, max_queue_delay_ms=LONG_DELAY_MS)
    first = await occupy(batcher, 0, 1)
    second = submit(batcher, 1, 1)
    await until(lambda: batcher.queued == 1)
    runtime.gate.set()
    await guarded(first)
    # The worker is free and one row waits for company: the batcher is collecting.
    await until(lambda: batcher.running == 0)
    assert not second.done()
    rest = [submit(batcher, i, 1) for i in range(2, 5)]
    await guarded(asyncio.gather(second, *rest))
    assert batches(metrics, "full") == 1
    assert batches(metrics, "delay") == 0
    assert runtime.batch_rows == [1, 4]


async def test_work_piled_up_behind_a_busy_worker_goes_as_one_full_batch(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=4, max_queue_delay_ms=LONG_DELAY_MS)
    tasks = [await occupy(batcher, 0, 1), *(submit(batcher, i, 1) for i in range(1, 5))]
    await until(lambda: batcher.queued == 4)
    runtime.gate.set()
    await guarded(asyncio.gather(*tasks))
    assert runtime.batch_rows == [1, 4]
    assert batches(metrics, "idle") == 1
    assert batches(metrics, "full") == 1


async def test_preferred_size_dispatches_before_the_delay(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, metrics = make_batcher(
        runtime, max_batch_size=8, preferred_batch_sizes=[2], max_queue_delay_ms=LONG_DELAY_MS
    )
    tasks = [await occupy(batcher, 0, 1), *(submit(batcher, i, 1) for i in range(1, 4))]
    await until(lambda: batcher.queued == 3)
    runtime.gate.set()
    await guarded(asyncio.gather(*tasks[:3]))
    # One row is left waiting for a partner; a second one completes a preferred batch.
    tasks.append(submit(batcher, 4, 1))
    await guarded(asyncio.gather(*tasks))
    assert runtime.batch_rows == [1, 2, 2]
    assert batches(metrics, "preferred") == 2


async def test_partial_batch_leaves_when_the_delay_runs_out(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=1)
    tasks = [await occupy(batcher, 0, 1), *(submit(batcher, i, 1) for i in range(1, 3))]
    await until(lambda: batcher.queued == 2)
    runtime.gate.set()
    await guarded(asyncio.gather(*tasks))
    assert runtime.batch_rows == [1, 2]
    assert batches(metrics, "delay") == 1


async def test_full_queue_refuses_at_once_with_retry_after(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=8, max_queue_size=2, max_queue_delay_ms=0)
    tasks = [await occupy(batcher, 0, 1), *(submit(batcher, i, 1) for i in range(1, 3))]  # one runs, two wait
    await until(lambda: batcher.queued == 2)
    with pytest.raises(Overloaded) as refused:
        await batcher.submit(request(rows_of(9, 1), 1, None))
    assert refused.value.retry_after_s >= 1
    runtime.gate.set()
    await guarded(asyncio.gather(*tasks))


async def test_expired_deadline_is_answered_and_never_reaches_the_runtime(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=0)
    running = await occupy(batcher, 0, 1)
    late = submit(batcher, 1, 2, deadline=time.monotonic() + 0.005)
    with pytest.raises(DeadlineExceeded):
        await guarded(late)  # answered while the worker is still blocked
    assert batcher.queued == 0
    runtime.gate.set()
    await guarded(running)
    assert runtime.batch_rows == [1]


async def test_deadline_already_passed_is_refused_without_queueing(make_batcher: BatcherFactory) -> None:
    runtime = EchoRuntime()
    batcher, _ = make_batcher(runtime)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(request(rows_of(0, 1), 1, time.monotonic() - 1.0))
    assert runtime.batch_rows == []


async def test_cancelled_caller_is_skipped(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=0)
    running = await occupy(batcher, 0, 1)
    gone = submit(batcher, 1, 2)
    kept = submit(batcher, 2, 3)
    await until(lambda: batcher.queued == 2)
    gone.cancel()
    await until(lambda: batcher.queued == 1)
    runtime.gate.set()
    out = await guarded(kept)
    await guarded(running)
    np.testing.assert_array_equal(out["y"], rows_of(2, 3)["x"])
    assert runtime.batch_rows == [1, 3]


async def test_runtime_failure_fails_only_that_batch(make_batcher: BatcherFactory) -> None:
    runtime = FailingRuntime(poison=-1.0)
    batcher, _ = make_batcher(runtime, max_batch_size=8)
    poisoned = {"x": np.full((2, 3), -1.0, dtype=np.float32)}
    with pytest.raises(InferenceFailed, match="injected runtime failure"):
        await guarded(batcher.submit(request(poisoned, 2, None)))
    out = await guarded(batcher.submit(request(rows_of(5, 2), 2, None)))
    np.testing.assert_array_equal(out["y"], rows_of(5, 2)["x"])


class SlowPoisonRuntime(SlowRuntime):
    """Blocks on the gate, then fails any batch holding a -1."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().run(inputs)
        if bool(np.any(inputs["x"] == -1.0)):
            raise RuntimeError("poisoned batch")
        return out


async def test_runtime_failure_reaches_every_caller_of_the_batch_and_no_other(make_batcher: BatcherFactory) -> None:
    runtime = SlowPoisonRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=2, max_queue_delay_ms=0)
    first = await occupy(batcher, 0, 1)
    same_batch = [
        asyncio.create_task(batcher.submit(request({"x": np.full((1, 3), -1.0, np.float32)}, 1, None))),
        submit(batcher, 1, 1),
    ]
    next_batch = submit(batcher, 2, 1)
    await until(lambda: batcher.queued == 3)
    runtime.gate.set()
    await guarded(first)
    outcomes = await guarded(asyncio.gather(*same_batch, return_exceptions=True))
    assert all(isinstance(o, InferenceFailed) and "poisoned batch" in o.message for o in outcomes)
    np.testing.assert_array_equal((await guarded(next_batch))["y"], rows_of(2, 1)["x"])
    assert runtime.batch_rows == [1, 2, 1]


async def test_batch_that_cannot_be_handed_to_a_worker_is_answered() -> None:
    executor = RuntimeExecutor(EchoRuntime(), 1, "test-batcher")
    batcher = Batcher(fake_manifest(), executor, Metrics())
    executor.shutdown(wait=True)  # the pool refuses new work from now on
    with pytest.raises(InferenceFailed, match="RuntimeError"):
        await guarded(batcher.submit(request(rows_of(0, 1), 1, None)))
    assert batcher.running == 0


class WrongRowsRuntime(EchoRuntime):
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"][:-1]}


async def test_output_rows_differing_from_input_rows_fail_the_batch(make_batcher: BatcherFactory) -> None:
    batcher, _ = make_batcher(WrongRowsRuntime())
    with pytest.raises(InferenceFailed, match="output 'y' has 1 rows for a batch of 2 rows"):
        await guarded(batcher.submit(request(rows_of(0, 2), 2, None)))


async def test_oversized_request_is_refused_without_allow_split(make_batcher: BatcherFactory) -> None:
    runtime = EchoRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=4)
    with pytest.raises(InvalidInput) as refused:
        await batcher.submit(request(rows_of(0, 5), 5, None))
    assert refused.value.field == "inputs"
    assert "at most 4 rows" in refused.value.message and "5 rows" in refused.value.message
    assert runtime.batch_rows == []


async def test_oversized_request_is_split_and_reassembled_in_order(make_batcher: BatcherFactory) -> None:
    runtime = EchoRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=4, allow_split=True, max_queue_delay_ms=0)
    out = await guarded(batcher.submit(request(rows_of(7, 10), 10, None)))
    np.testing.assert_array_equal(out["y"], rows_of(7, 10)["x"])
    assert sum(runtime.batch_rows) == 10
    assert max(runtime.batch_rows) <= 4


async def test_split_request_fails_as_a_whole_when_a_chunk_expires(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=2, allow_split=True, max_queue_delay_ms=0)
    running = await occupy(batcher, 0, 1)
    split = asyncio.create_task(batcher.submit(request(rows_of(1, 5), 5, time.monotonic() + 0.005)))
    with pytest.raises(DeadlineExceeded):
        await guarded(split)
    assert batcher.queued == 0
    runtime.gate.set()
    await guarded(running)
    assert runtime.batch_rows == [1]


async def test_disabled_batching_runs_every_request_alone(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, metrics = make_batcher(runtime, enabled=False, max_batch_size=8, max_queue_delay_ms=LONG_DELAY_MS)
    tasks = [await occupy(batcher, 0, 1), submit(batcher, 1, 2), submit(batcher, 2, 3)]
    await until(lambda: batcher.queued == 2)
    runtime.gate.set()
    results = await guarded(asyncio.gather(*tasks))
    assert runtime.batch_rows == [1, 2, 3]
    for i, (n, out) in enumerate(zip([1, 2, 3], results, strict=True)):
        np.testing.assert_array_equal(out["y"], rows_of(i, n)["x"])
    assert batches(metrics, "idle") == 1
    assert batches(metrics, "full") == 2


async def test_requests_with_different_dynamic_dims_are_never_concatenated(make_batcher: BatcherFactory) -> None:
    runtime = EchoRuntime(features=-1)
    batcher, _ = make_batcher(runtime, features=-1, max_batch_size=16, max_queue_delay_ms=0)
    widths = [2 + i % 3 for i in range(60)]
    results = await guarded(
        asyncio.gather(
            *(batcher.submit(request(rows_of(i, 1 + i % 2, w), 1 + i % 2, None)) for i, w in enumerate(widths))
        )
    )
    for i, (w, out) in enumerate(zip(widths, results, strict=True)):
        np.testing.assert_array_equal(out["y"], rows_of(i, 1 + i % 2, w)["x"])


async def test_close_refuses_new_requests_and_drains_queued_and_running(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=2, max_queue_delay_ms=LONG_DELAY_MS)
    tasks = [await occupy(batcher, 0, 1), *(submit(batcher, i, 1) for i in range(1, 4))]
    await until(lambda: batcher.queued == 3)
    closing = asyncio.create_task(batcher.close(timeout_s=HANG_GUARD_S))
    await until(lambda: batcher.closing)
    with pytest.raises(ModelNotReady):
        await batcher.submit(request(rows_of(9, 1), 1, None))
    runtime.gate.set()
    assert await guarded(closing) is True
    results = await guarded(asyncio.gather(*tasks))
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], rows_of(i, 1)["x"])
    assert sum(runtime.batch_rows) == 4


async def test_close_gives_up_after_its_timeout_and_answers_the_queue(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, _ = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=0)
    running = await occupy(batcher, 0, 1)
    queued = submit(batcher, 1, 1)
    await until(lambda: batcher.queued == 1)
    assert await guarded(batcher.close(timeout_s=0.01)) is False
    with pytest.raises(ModelNotReady, match="closed before the request ran"):
        await guarded(queued)
    runtime.gate.set()
    await guarded(running)


class RunClocks:
    """The wall clock and per-thread CPU clocks an executor measures runs by, moved only by the
    runtime's runs: what a run costs is what the test says, whatever the machine's load."""

    def __init__(self) -> None:
        self.wall_s = 0.0
        self.cpu_s: dict[int, float] = {}

    def wall(self) -> float:
        return self.wall_s

    def cpu(self) -> float:
        return self.cpu_s.get(threading.get_ident(), 0.0)

    def spend(self, computing_s: float, waiting_s: float) -> None:
        """A run on this thread that computed `computing_s` and waited `waiting_s` (no CPU)."""
        self.wall_s += computing_s + waiting_s
        ident = threading.get_ident()
        self.cpu_s[ident] = self.cpu_s.get(ident, 0.0) + computing_s


class ThreadRecordingRuntime(EchoRuntime):
    """An inline-safe EchoRuntime that records the thread of every run and can be made slow
    (computing) or made to wait (no CPU, as a worker waiting for the GIL), on `clocks`."""

    inline_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.extra_s = 0.0
        self.wait_s = 0.0
        self.clocks = RunClocks()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        self.clocks.spend(self.extra_s, self.wait_s)
        return super().run(inputs)


def inline_executor(runtime: ThreadRecordingRuntime) -> RuntimeExecutor:
    """One worker, inline runs under INLINE_LIMIT_S, measured on the runtime's own clocks."""
    return RuntimeExecutor(
        runtime, 1, "test-inline", inline_max_s=INLINE_LIMIT_S, clock=runtime.clocks.wall, cpu_clock=runtime.clocks.cpu
    )


INLINE_LIMIT_S = 0.005


async def test_a_batch_runs_on_the_loop_once_its_size_has_proven_cheap_and_goes_back_when_slow() -> None:
    runtime = ThreadRecordingRuntime()
    executor = inline_executor(runtime)
    batcher = Batcher(fake_manifest(), executor, Metrics())
    loop_thread = threading.current_thread().name
    try:
        for request_id in range(INLINE_MIN_RUNS + 2):
            outputs = await guarded(batcher.submit(request(rows_of(request_id, 1), 1)))
            np.testing.assert_array_equal(outputs["y"], rows_of(request_id, 1)["x"])
        # The first runs of a size go to the worker (measured there), then run inline.
        assert all(name != loop_thread for name in runtime.threads[:INLINE_MIN_RUNS])
        assert runtime.threads[INLINE_MIN_RUNS:] == [loop_thread, loop_thread]

        # Another size bucket is measured on its own: 5-8 rows has not run yet.
        await guarded(batcher.submit(request(rows_of(70, 6), 6)))
        assert runtime.threads[-1] != loop_thread
        assert not executor.cheap(8) and executor.cheap(1)

        runtime.extra_s = 0.2  # slower than the limit: the estimate rises, the size goes back
        await guarded(batcher.submit(request(rows_of(90, 1), 1)))
        assert runtime.threads[-1] == loop_thread
        assert not executor.cheap(1)
        await guarded(batcher.submit(request(rows_of(91, 1), 1)))
        assert runtime.threads[-1] != loop_thread
    finally:
        executor.shutdown(wait=True)


async def test_batches_of_many_requests_run_on_the_loop_under_load() -> None:
    runtime = ThreadRecordingRuntime()
    executor = inline_executor(runtime)
    manifest = fake_manifest(batching=BatchingPolicy(max_batch_size=8, max_queue_delay_ms=LONG_DELAY_MS))
    batcher = Batcher(manifest, executor, Metrics())
    loop_thread = threading.current_thread().name
    try:
        for round_ in range(INLINE_MIN_RUNS + 1):  # 8 requests of one row: full batches of 8 rows
            results = await guarded(
                asyncio.gather(*(batcher.submit(request(rows_of(round_ * 10 + i, 1), 1)) for i in range(8)))
            )
            for i, out in enumerate(results):
                np.testing.assert_array_equal(out["y"], rows_of(round_ * 10 + i, 1)["x"])
        assert runtime.batch_rows[-1] == 8
        assert runtime.threads[-1] == loop_thread
    finally:
        executor.shutdown(wait=True)


async def test_a_worker_run_is_costed_by_its_cpu_not_by_its_waiting() -> None:
    """Under load a worker waits for the GIL on its way out of the runtime: not the model's cost."""
    runtime = ThreadRecordingRuntime()
    runtime.wait_s = 2 * INLINE_LIMIT_S
    executor = inline_executor(runtime)
    batcher = Batcher(fake_manifest(), executor, Metrics())
    try:
        for request_id in range(INLINE_MIN_RUNS):
            await guarded(batcher.submit(request(rows_of(request_id, 1), 1)))
        assert executor.cheap(1)
    finally:
        executor.shutdown(wait=True)


async def test_runtimes_that_may_block_never_run_inline() -> None:
    runtime = EchoRuntime()  # not inline_safe: a fake or a runtime that waits on something else
    executor = RuntimeExecutor(runtime, 1, "test-inline", inline_max_s=1.0)
    batcher = Batcher(fake_manifest(), executor, Metrics())
    try:
        for request_id in range(INLINE_MIN_RUNS + 2):
            await guarded(batcher.submit(request(rows_of(request_id, 1), 1)))
        assert not executor.cheap(1)
    finally:
        executor.shutdown(wait=True)


async def test_an_inline_run_that_fails_answers_its_callers_with_the_error() -> None:
    runtime = ThreadRecordingRuntime()
    executor = inline_executor(runtime)
    batcher = Batcher(fake_manifest(), executor, Metrics())
    try:
        for request_id in range(INLINE_MIN_RUNS):
            await guarded(batcher.submit(request(rows_of(request_id, 1), 1)))
        assert executor.cheap(1)

        def failing(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            runtime.threads.append(threading.current_thread().name)
            raise RuntimeError("injected runtime failure")

        runtime.run = failing  # type: ignore[method-assign]
        with pytest.raises(InferenceFailed, match="injected runtime failure"):
            await guarded(batcher.submit(request(rows_of(9, 1), 1)))
        assert runtime.threads[-1] == threading.current_thread().name  # it did run inline
        assert batcher.running == 0
    finally:
        executor.shutdown(wait=True)


async def test_a_request_alone_in_the_server_runs_inline_without_a_loop_turn_and_is_observed_after() -> None:
    """`InferenceRequest.alone` (one client): dispatched inside `submit`, so a cheap batch is
    answered before the caller's await could suspend; its observer runs on a later turn."""
    runtime = ThreadRecordingRuntime()
    executor = inline_executor(runtime)
    observed: list[np.ndarray] = []
    seen = asyncio.Event()

    def observe(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        observed.append(outputs["y"])
        seen.set()

    batcher = Batcher(fake_manifest(), executor, Metrics(), on_batch=observe)
    try:
        for request_id in range(INLINE_MIN_RUNS):  # the size proves cheap on the worker first
            await guarded(batcher.submit(request(rows_of(request_id, 1), 1)))
        seen.clear()
        observed.clear()
        lone = batcher.submit(request(rows_of(7, 1), 1)._replace(alone=True))
        with pytest.raises(StopIteration) as finished:
            lone.send(None)  # ran to its end in one step: it never waited for the loop
        np.testing.assert_array_equal(finished.value.value["y"], rows_of(7, 1)["x"])
        assert runtime.threads[-1] == threading.current_thread().name
        assert observed == []  # the caller answers first
        await guarded(seen.wait())
        np.testing.assert_array_equal(observed[0], rows_of(7, 1)["x"])
    finally:
        executor.shutdown(wait=True)


async def test_a_request_alone_goes_to_a_worker_at_once_when_its_size_is_not_proven_cheap(
    make_batcher: BatcherFactory,
) -> None:
    runtime = EchoRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=8, max_queue_delay_ms=LONG_DELAY_MS)
    seen_by_next_task: list[tuple[int, int]] = []

    async def probe() -> None:  # runs right after the lone request's first step, same turn
        seen_by_next_task.append((batcher.running, batcher.queued))

    lone = asyncio.create_task(batcher.submit(request(rows_of(1, 2), 2)._replace(alone=True)))
    await guarded(asyncio.create_task(probe()))
    out = await guarded(lone)
    np.testing.assert_array_equal(out["y"], rows_of(1, 2)["x"])
    assert seen_by_next_task == [(1, 0)]  # on the worker already, not waiting for a pump
    assert runtime.batch_rows == [2]
    assert batches(metrics, "idle") == 1


async def test_a_request_alone_joins_the_queue_when_the_batcher_is_not_idle(make_batcher: BatcherFactory) -> None:
    runtime = SlowRuntime()
    batcher, metrics = make_batcher(runtime, max_batch_size=2, max_queue_delay_ms=LONG_DELAY_MS)
    first = await occupy(batcher, 0, 1)
    lone = asyncio.create_task(batcher.submit(request(rows_of(1, 1), 1)._replace(alone=True)))
    second = submit(batcher, 2, 1)
    await until(lambda: batcher.queued == 2)
    runtime.gate.set()
    results = await guarded(asyncio.gather(first, lone, second))
    for out, request_id in zip(results, (0, 1, 2), strict=True):
        np.testing.assert_array_equal(out["y"], rows_of(request_id, 1)["x"])
    assert runtime.batch_rows == [1, 2]  # the waiting two went as one (full) batch
    assert batches(metrics, "full") == 1
