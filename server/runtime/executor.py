"""The one thread hop of the request path: runs blocking `Runtime.run` on a version's own pool.

Each model version gets a dedicated, bounded `ThreadPoolExecutor` sized by its
`batching.instances`, so one slow model cannot starve another's workers and at most
`instances` batches of a version run at once. onnxruntime releases the GIL while it computes.
Results go back to the event loop with `loop.call_soon_threadsafe`; runtimes never see the loop.

The exception, `run_inline`: a lone request to an idle version (the batcher decides), whose
size has run in under `inline_max_s` (200 us by default) on its last runs, runs on the calling
thread, the event loop. For a model that cheap the hop costs more than the model: two thread
wake-ups and a self-pipe write and read per batch; on the demo MLP at one client, inline runs
answered 1.38x the requests per second. Only runtimes that block on nothing but computation
offer it (`inline_safe`); a run that turns out slower raises the estimate and sends that size
back to the workers.
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


INLINE_MAX_ROWS = 8
"""Batches up to this many rows may run inline (when their size has proven cheap)."""
INLINE_MIN_RUNS = 4
"""Runs of a size measured before that size may run inline."""
_SMOOTHING = 0.2
"""Weight of a faster run in a size's moving average of run time (a slower one replaces it)."""


class RuntimeExecutor:
    """Runs one version's batches on `instances` worker threads (or, when cheap, inline)."""

    def __init__(self, runtime: Runtime, instances: int, thread_name: str, inline_max_s: float = 0.0) -> None:
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        self.runtime = runtime
        self.instances = instances
        self._pool = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=thread_name)
        self.inline_max_s = inline_max_s if getattr(runtime, "inline_safe", False) else 0.0
        """Runs faster than this may be inline (0: none may)."""
        self._run_s: list[float] = [0.0] * (INLINE_MAX_ROWS + 1)
        """Moving average of run seconds by batch rows (small batches only)."""
        self._runs: list[int] = [0] * (INLINE_MAX_ROWS + 1)

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
        """True when a batch of `rows` rows has run in under `inline_max_s` lately: `run_inline` it."""
        return rows <= INLINE_MAX_ROWS and self._runs[rows] >= INLINE_MIN_RUNS and self._run_s[rows] < self.inline_max_s

    def run_inline(self, inputs: Tensors, rows: int) -> tuple[Tensors | None, BaseException | None, float]:
        """Run a batch on the calling thread: (outputs, error, run seconds), one of the first two set."""
        started = time.perf_counter()
        try:
            outputs = self.runtime.run(inputs)
        except Exception as error:
            return None, error, self._measured(rows, time.perf_counter() - started)
        return outputs, None, self._measured(rows, time.perf_counter() - started)

    def _measured(self, rows: int, run_s: float) -> float:
        """Fold a run into its size's average (small sizes, and only when inline runs are on)."""
        if self.inline_max_s and rows <= INLINE_MAX_ROWS:
            # Quick to distrust, slow to trust again: a slower run replaces the average, faster
            # ones pull it down gradually. (Workers and the loop may race here: a lost update
            # only loses one sample.)
            average = self._run_s[rows]
            self._run_s[rows] = run_s if run_s > average else average + _SMOOTHING * (run_s - average)
            self._runs[rows] += 1
        return run_s

    def _run(self, loop: asyncio.AbstractEventLoop, inputs: Tensors, on_done: BatchDone) -> None:
        started = time.perf_counter()
        rows = _rows(inputs)
        try:
            outputs = self.runtime.run(inputs)
        except BaseException as error:  # handed to the loop; the worker thread must survive
            loop.call_soon_threadsafe(on_done, None, error, self._measured(rows, time.perf_counter() - started))
            return
        loop.call_soon_threadsafe(on_done, outputs, None, self._measured(rows, time.perf_counter() - started))

    def shutdown(self, wait: bool) -> None:
        """Stop taking batches; `wait` blocks until running ones end (call off the loop)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


def _rows(inputs: Tensors) -> int:
    """Rows of a batch (its first input's first axis; 0 when it has none)."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 0
    return 0
