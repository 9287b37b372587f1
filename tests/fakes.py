"""Small real stand-ins for engine parts: runtimes that echo, block or fail, a manifest maker,
and a tiny real ONNX graph for tests that need onnxruntime itself.

Used by the engine's unit tests and usable by the HTTP edge's tests: they satisfy the
`server.runtime.base.Runtime` protocol without onnxruntime.
"""

from __future__ import annotations

import threading
from pathlib import Path

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
    """An EchoRuntime whose every run blocks until `gate` is set.

    Lets a test hold all workers busy while it queues requests, then release them.
    """

    def __init__(self, features: int = 3) -> None:
        super().__init__(features)
        self.gate = threading.Event()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def write_tiny_mlp(path: Path, features: int = 3, outputs: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a real ONNX graph `y = sigmoid(x @ W + b)` with a dynamic batch axis; return (W, b).

    Input `x` FP32 [N, features], output `y` FP32 [N, outputs]. Built with `onnx.helper`
    (imported here so that importing this module never needs onnx).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(features, outputs)).astype(np.float32)
    bias = rng.normal(size=(outputs,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["y"])],
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return weight, bias


def tiny_mlp_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What `write_tiny_mlp`'s graph computes, in numpy."""
    return 1.0 / (1.0 + np.exp(-(x @ weight + bias)))


def write_model_version(repository: Path, name: str, version: int, features: int = 3,
                        outputs: int = 2, batching: BatchingPolicy | None = None,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Write `<repository>/<name>/<version>/` with a tiny MLP and a matching `model.json`.

    The weights depend on `version`, so answers tell versions apart. Returns (W, b).
    """
    from server.registry.manifest import sha256_file

    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    weight, bias = write_tiny_mlp(folder / "model.onnx", features, outputs, seed=version)
    ModelManifest(
        name=name,
        version=version,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, features])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, outputs])],
        batching=batching or BatchingPolicy(max_batch_size=8),
        lineage=Lineage(architecture="tiny_mlp"),
        onnx_sha256=sha256_file(folder / "model.onnx"),
    ).write(folder)
    return weight, bias
