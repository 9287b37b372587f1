"""`ServedVersion`: one loaded model version as the request path sees it (runtime + pool + batcher).

The routing table hands these to the HTTP edge with a **lease** taken (`lease()`); the edge
releases it once the request is answered. `drain()` waits for the leases to reach zero before
it closes the batcher, so a request routed here before a swap is still answered by this
version, even when its body was still arriving as the swap happened.
"""

from __future__ import annotations

import asyncio
import time

from server.batching.batcher import Batcher, BatchObserver
from server.contract.manifest import ModelManifest
from server.metrics.instruments import Metrics
from server.monitoring.drift import VersionDrift
from server.protocol.schema import ModelSchema
from server.request import InferenceRequest, Tensors
from server.runtime.base import Runtime
from server.runtime.executor import RuntimeExecutor


class ServedVersion:
    """A model version that is loaded, warmed up and taking requests through its batcher."""

    def __init__(self, manifest: ModelManifest, runtime: Runtime, metrics: Metrics, inline_max_s: float = 0.0) -> None:
        self.name = manifest.name
        self.version = manifest.version
        self.manifest = manifest
        self.schema = ModelSchema.from_manifest(manifest)
        """What the decoders check requests against; built once per loaded version."""
        self.runtime = runtime
        self.executor = RuntimeExecutor(
            runtime,
            manifest.batching.instances,
            thread_name=f"hotserve-{manifest.name}-v{manifest.version}",
            inline_max_s=inline_max_s,
        )
        self._drift_monitor = metrics.drift
        self.drift: VersionDrift | None = metrics.drift.track(manifest)
        """Samples each batch for drift monitoring; None when model.json has no reference."""
        self.evidence = metrics.evidence.open_load(manifest)
        """What this load shows, for guarded promotion: a reload starts from zero."""
        self.batcher = Batcher(
            manifest,
            self.executor,
            metrics,
            on_batch=observe_batches(None if self.drift is None else self.drift.record, self.evidence.predicted),
        )
        timeout_ms = manifest.batching.default_timeout_ms
        self.default_timeout_s = None if timeout_ms is None else timeout_ms / 1000.0
        """Deadline (from arrival) of requests that carry none: `batching.default_timeout_ms`."""
        self._leases = 0
        self._released: asyncio.Event | None = None

    @property
    def provider(self) -> str:
        """Execution provider in use, for model metadata."""
        return self.runtime.provider

    # --- request path ---------------------------------------------------------------------

    def lease(self) -> None:
        """A request was routed here: keep this version alive until `release()`."""
        self._leases += 1

    def release(self) -> None:
        """The leased request was answered (or abandoned)."""
        self._leases -= 1
        if self._leases == 0 and self._released is not None:
            self._released.set()

    @property
    def leases(self) -> int:
        """Requests routed to this version and not yet answered."""
        return self._leases

    async def infer(self, request: InferenceRequest) -> Tensors:
        """Run a validated request and return every output for exactly its rows.

        Raises Overloaded, DeadlineExceeded, InvalidInput (too many rows without
        `allow_split`), InferenceFailed, ModelNotReady (closed).
        """
        return await self.batcher.submit(request)

    # --- control path ---------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> bool:
        """Wait (up to `timeout_s`) until no request holds a lease, then `close()` with what is left.

        Call only once the version is out of the routing table, so no new lease can be taken.
        Returns whether every routed request finished.
        """
        deadline = time.monotonic() + timeout_s
        if self._leases:
            self._released = asyncio.Event()
            try:
                await asyncio.wait_for(self._released.wait(), timeout_s)
            except TimeoutError:
                pass
        return await self.close(max(0.0, deadline - time.monotonic()))

    async def close(self, timeout_s: float) -> bool:
        """Stop admitting, drain the batcher for up to `timeout_s`, shut the pool and the runtime.

        Returns whether every accepted request finished.
        """
        if self.drift is not None:
            self._drift_monitor.untrack(self.drift)
        drained = await self.batcher.close(timeout_s)
        if drained:
            await asyncio.to_thread(self.executor.shutdown, True)
        else:
            # A batch is still running: don't wait for it. OnnxRuntime.close only drops the
            # session reference, so the running call finishes on its own reference.
            self.executor.shutdown(wait=False)
        self.runtime.close()
        return drained and self._leases == 0


def observe_batches(*observers: BatchObserver | None) -> BatchObserver | None:
    """One batch observer calling each of `observers` that is set (None when none is)."""
    chosen = [observer for observer in observers if observer is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def observe(inputs: Tensors, outputs: Tensors) -> None:
        for observer in chosen:
            observer(inputs, outputs)

    return observe
