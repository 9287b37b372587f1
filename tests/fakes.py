"""Small real stand-ins for engine parts: runtimes that echo, block or fail, and a manifest maker.

Used by the engine's unit tests and usable by the HTTP edge's tests: they satisfy the
`server.runtime.base.Runtime` protocol without onnxruntime.
"""

from __future__ import annotations

import threading

import numpy as np

from server.registry.manifest import BatchingPolicy, Lineage, ModelManifest, TensorSpec


def fake_manifest(name: str = "echo", version: int = 1, features: int = 3,
                  batching: BatchingPolicy | None = None) -> ModelManifest:
    """A manifest with one FP32 input `x` [-1, features] and one FP32 output `y` of the same shape."""
    return ModelManifest(
        name=name,
        version=version,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, features])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, features])],
        batching=batching or BatchingPolicy(),
        lineage=Lineage(architecture="fake"),
        onnx_sha256="0" * 64,
    )


class EchoRuntime:
    """Returns input `x` as output `y`, row for row; records the row count of every batch."""

    provider = "FakeExecutionProvider"

    def __init__(self, features: int = 3) -> None:
        self.inputs = [TensorSpec(name="x", datatype="FP32", shape=[-1, features])]
        self.outputs = [TensorSpec(name="y", datatype="FP32", shape=[-1, features])]
        self.batch_rows: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self._lock:
            self.batch_rows.append(int(x.shape[0]))
        return {"y": np.array(x, copy=True)}

    def close(self) -> None:
        self.closed = True


class SlowRuntime(EchoRuntime):
    """An EchoRuntime whose every run blocks until `gate` is set; `entered` is set once a run waits.

    Lets a test hold all workers busy while it queues requests, then release them.
    """

    def __init__(self, features: int = 3) -> None:
        super().__init__(features)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("SlowRuntime gate was never opened")
        return super().run(inputs)


class FailingRuntime(EchoRuntime):
    """Raises on every batch, or with `poison` set only on batches containing that value in `x`."""

    def __init__(self, features: int = 3, poison: float | None = None) -> None:
        super().__init__(features)
        self.poison = poison

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.poison is None or bool(np.any(inputs["x"] == self.poison)):
            raise RuntimeError("injected runtime failure")
        return super().run(inputs)
