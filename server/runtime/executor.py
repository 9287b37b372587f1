"""The one thread hop of the request path: runs blocking `Runtime.run` on a version's own pool.

Each model version gets a dedicated, bounded `ThreadPoolExecutor` sized by its
`batching.instances`, so one slow model cannot starve another's workers and at most
`instances` batches of a version run at once. onnxruntime releases the GIL while it computes.
Results go back to the event loop with `loop.call_soon_threadsafe`; runtimes never see the loop.

The exception, `run_inline`: a batch whose size (by power-of-two bucket of rows) has run in
under `inline_max_s` (500 us by default) lately runs on the calling thread, the event loop, at
any load. The hop is not free for the loop: a queue put and a worker wake-up, the worker taking
the GIL back from the loop before and after the run, a self-pipe write and read per batch. On
the demo MLP at 64 clients that cost the loop more than the model: inline runs answered 1.3-1.4x
the requests per second of sending every batch to the workers, at 133 against 176 us of CPU per
request (alternated rounds of one run); at one client, 1.38x. The default allows for load: a
64-row batch of that MLP took ~150 us on the busy loop against 77 us on an idle machine. Only
runtimes that block on nothing but computation offer it (`inline_safe`: onnxruntime on the CPU
provider, not a GPU session). A worker's run is measured in its thread's CPU time (waiting for the
GIL under load is not the model's cost), an inline run in wall time (what the loop paid), into a
moving average per bucket, so a size that turns out slower goes back to the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from server.request import Tensors
from server.runtime.base import Runtime

BatchDone = Callable[[Tensors | None, BaseException | None, float], None]
"""Called on the loop thread with (outputs, error, run seconds); exactly one of the first two is set."""


INLINE_MIN_RUNS = 4
"""Runs of a size bucket measured before batches of that bucket may run inline."""
_SMOOTHING = 0.2
"""Weight of the latest run in a bucket's moving average of run time."""
_BUCKETS = 33
"""Size buckets: bucket b holds batches of 2**(b-1) + 1 .. 2**b rows (b = (rows - 1).bit_length())."""


class RuntimeExecutor:
    """Runs one version's batches on `instances` worker threads (or, when cheap, inline)."""

    def __init__(
        self,
        runtime: Runtime,
        instances: int,
        thread_name: str,
        inline_max_s: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        """`clock` (wall seconds) and `cpu_clock` (the calling thread's CPU seconds) measure runs;
        tests pass clocks that their runtime moves, so what a run costs is what the test says."""
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        self.runtime = runtime
        self.instances = instances
        self._pool = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=thread_name)
        self.inline_max_s = inline_max_s if getattr(runtime, "inline_safe", False) else 0.0
        """Runs faster than this may be inline (0: none may)."""
        self._run_s: list[float] = [0.0] * _BUCKETS
        """Moving average of run seconds by size bucket."""
        self._runs: list[int] = [0] * _BUCKETS
        self._clock = clock
        self._cpu_clock = cpu_clock

    def submit(self, loop: asyncio.AbstractEventLoop, inputs: Tensors, on_done: BatchDone) -> None:
        """Run a batch on a worker; `on_done` is later called on `loop`. Hot path: no task, no future."""
        self._pool.submit(self._run, loop, inputs, on_done)

    async def run(self, inputs: Tensors) -> Tensors:
        """Run one batch and await its outputs (warm-up and other control-path calls)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Tensors] = loop.create_future()

        def resolve(outputs: Tensors | None, error: BaseException | None, _run_s: float) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert outputs is not None
                future.set_result(outputs)

        self.submit(loop, inputs, resolve)
        return await future

    def cheap(self, rows: int) -> bool:
        """True when batches of about `rows` rows have run in under `inline_max_s` lately: `run_inline` it."""
        bucket = _bucket(rows)
        return self._runs[bucket] >= INLINE_MIN_RUNS and self._run_s[bucket] < self.inline_max_s

    def run_inline(self, inputs: Tensors, rows: int) -> tuple[Tensors | None, BaseException | None, float]:
        """Run a batch on the calling thread: (outputs, error, run seconds), one of the first two set."""
        started = self._clock()
        outputs: Tensors | None = None
        failure: Exception | None = None
        try:
            outputs = self.runtime.run(inputs)
        except Exception as error:
            failure = error
        run_s = self._clock() - started
        self._measured(rows, run_s)
        return outputs, failure, run_s

    def _measured(self, rows: int, cost_s: float) -> None:
        """Fold a run's cost into its size bucket's average (only when inline runs are on)."""
        if self.inline_max_s and rows:
            # A moving average, not the latest run: on a busy machine single runs take several
            # times their usual cost (preempted, caches cold), and a bucket should not flip to the
            # workers on each. A lasting change moves it within a few runs. (Workers and the loop
            # may race here: a lost update only loses one sample.)
            bucket = _bucket(rows)
            runs = self._runs[bucket]
            average = self._run_s[bucket]
            self._run_s[bucket] = cost_s if runs == 0 else average + _SMOOTHING * (cost_s - average)
            self._runs[bucket] = runs + 1

    def _run(self, loop: asyncio.AbstractEventLoop, inputs: Tensors, on_done: BatchDone) -> None:
        started = self._clock()
        started_cpu = self._cpu_clock()
        outputs: Tensors | None = None
        failure: BaseException | None = None
        try:
            outputs = self.runtime.run(inputs)
        except BaseException as error:  # handed to the loop; the worker thread must survive
            failure = error
        run_s = self._clock() - started
        # The model's cost is the CPU it took: under load this thread also waits for the GIL
        # (held by the loop) on its way out of the runtime, which an inline run would not.
        self._measured(_rows(inputs), self._cpu_clock() - started_cpu)
        loop.call_soon_threadsafe(on_done, outputs, failure, run_s)

    def shutdown(self, wait: bool) -> None:
        """Stop taking batches; `wait` blocks until running ones end (call off the loop)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


def _bucket(rows: int) -> int:
    return min((rows - 1).bit_length(), _BUCKETS - 1)


def _rows(inputs: Tensors) -> int:
    """Rows of a batch (its first input's first axis; 0 when it has none)."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 0
    return 0
