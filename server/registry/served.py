"""`ServedVersion`: one loaded model version as the request path sees it (runtime + pool + batcher).

`registry.resolve()` hands these to the HTTP edge; `infer` is the only call on the request path.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from server.batching.batcher import Batcher
from server.metrics.instruments import Metrics
from server.registry.manifest import ModelManifest
from server.runtime.base import Runtime
from server.runtime.executor import RuntimeExecutor


class ServedVersion:
    """A model version that is loaded, warmed up and taking requests through its batcher."""

    def __init__(self, manifest: ModelManifest, runtime: Runtime, metrics: Metrics) -> None:
        self.name = manifest.name
        self.version = manifest.version
        self.manifest = manifest
        self.runtime = runtime
        self.executor = RuntimeExecutor(runtime, manifest.batching.instances,
                                        thread_name=f"hotserve-{manifest.name}-v{manifest.version}")
        self.batcher = Batcher(manifest, self.executor, metrics)
        timeout_ms = manifest.batching.default_timeout_ms
        self._default_timeout_s = None if timeout_ms is None else timeout_ms / 1000.0

    @property
    def provider(self) -> str:
        """Execution provider in use, for model metadata."""
        return self.runtime.provider

    async def infer(self, inputs: dict[str, np.ndarray], rows: int,
                    deadline: float | None) -> dict[str, np.ndarray]:
        """Run validated `inputs` (`rows` rows each) and return every output for exactly those rows.

        `deadline` is an absolute `time.monotonic()`; None falls back to the manifest's
        `batching.default_timeout_ms`. Raises Overloaded, DeadlineExceeded, InvalidInput (too
        many rows without `allow_split`), InferenceFailed, ModelNotReady (closing).
        """
        if deadline is None and self._default_timeout_s is not None:
            deadline = time.monotonic() + self._default_timeout_s
        return await self.batcher.submit(inputs, rows, deadline)

    async def close(self, timeout_s: float) -> bool:
        """Stop admitting, drain for up to `timeout_s`, shut the worker pool and the runtime.

        Returns whether every accepted request finished.
        """
        drained = await self.batcher.close(timeout_s)
        if drained:
            await asyncio.to_thread(self.executor.shutdown, True)
        else:
            # A batch is still running: don't wait for it. OnnxRuntime.close only drops the
            # session reference, so the running call finishes on its own reference.
            self.executor.shutdown(wait=False)
        self.runtime.close()
        return drained
