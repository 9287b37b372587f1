"""The one thread hop of the request path: runs blocking `Runtime.run` on a version's own pool.

Each model version gets a dedicated, bounded `ThreadPoolExecutor` sized by its
`batching.instances`, so one slow model cannot starve another's workers and at most
`instances` batches of a version run at once. onnxruntime releases the GIL while it computes.
Results go back to the event loop with `loop.call_soon_threadsafe`; runtimes never see the loop.
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


class RuntimeExecutor:
    """Runs one version's batches on `instances` worker threads."""

    def __init__(self, runtime: Runtime, instances: int, thread_name: str) -> None:
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        self.runtime = runtime
        self.instances = instances
        self._pool = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=thread_name)

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

    def _run(self, loop: asyncio.AbstractEventLoop, inputs: Tensors, on_done: BatchDone) -> None:
        started = time.perf_counter()
        try:
            outputs = self.runtime.run(inputs)
        except BaseException as error:  # handed to the loop; the worker thread must survive
            loop.call_soon_threadsafe(on_done, None, error, time.perf_counter() - started)
            return
        loop.call_soon_threadsafe(on_done, outputs, None, time.perf_counter() - started)

    def shutdown(self, wait: bool) -> None:
        """Stop taking batches; `wait` blocks until running ones end (call off the loop)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
