"""Tiny ONNX models built with `onnx.helper`, written into a model repository with a valid `model.json`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gated_serve import GATED_PREFIX
from server.contract.manifest import (
    ONNX_FILENAME,
    BatchingPolicy,
    DriftReference,
    FeatureSpec,
    Lineage,
    ModelManifest,
    TensorSpec,
    sha256_file,
)

OPSET = 17
IR_VERSION = 9  # onnxruntime 1.31 reads IR <= 13; onnx's default may be newer
TAB_COLUMNS = ["amount", "age", "hour", "count"]


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    name: str,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def tabular_model(seed: int) -> onnx.ModelProto:
    """score = sigmoid(features @ W + b): features FP32 [n, 4] -> score FP32 [n, 1]."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, 1)).astype(np.float32)
    bias = rng.normal(size=(1,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
        "tabular",
    )


def multi_model() -> onnx.ModelProto:
    """Several inputs/outputs of different dtypes: FP32, INT64, FP16, BYTES in; FP32, INT64, BOOL, FP16, BYTES out."""
    nodes = [
        helper.make_node("ReduceSum", ["a", "axes"], ["a_sum"], keepdims=1),
        helper.make_node("Mul", ["b", "two"], ["b_twice"]),
        helper.make_node("Greater", ["a", "zero"], ["a_positive"]),
        helper.make_node("Add", ["h", "h"], ["h_double"]),
        helper.make_node("Identity", ["c"], ["c_same"]),
    ]
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
        helper.make_tensor_value_info("b", TensorProto.INT64, ["n", 2]),
        helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["n", 2]),
        helper.make_tensor_value_info("c", TensorProto.STRING, ["n"]),
    ]
    outputs = [
        helper.make_tensor_value_info("a_sum", TensorProto.FLOAT, ["n", 1]),
        helper.make_tensor_value_info("b_twice", TensorProto.INT64, ["n", 2]),
        helper.make_tensor_value_info("a_positive", TensorProto.BOOL, ["n", 3]),
        helper.make_tensor_value_info("h_double", TensorProto.FLOAT16, ["n", 2]),
        helper.make_tensor_value_info("c_same", TensorProto.STRING, ["n"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(2, dtype=np.int64), "two"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    return _model(nodes, inputs, outputs, initializers, "multi")


def identity_model() -> onnx.ModelProto:
    """y = x: x FP32 [n, 1] -> y FP32 [n, 1]."""
    return _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        [],
        "identity",
    )


def write_version(
    repository: Path,
    name: str,
    version: int,
    model: onnx.ModelProto,
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    batching: BatchingPolicy | None = None,
    features: FeatureSpec | None = None,
    drift: DriftReference | None = None,
) -> Path:
    """Write `<repository>/<name>/<version>/{model.onnx, model.json}`; returns the version folder."""
    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    onnx.save(model, folder / ONNX_FILENAME)
    ModelManifest(
        name=name,
        version=version,
        inputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in inputs],  # type: ignore[arg-type]
        outputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in outputs],  # type: ignore[arg-type]
        batching=batching or BatchingPolicy(),
        features=features,
        drift=drift,
        lineage=Lineage(
            architecture=f"test-{name}",
            git_commit="0123abc",
            dataset_sha256="e" * 64,
            metrics={"auc": 0.5 + version / 100},
        ),
        onnx_sha256=sha256_file(folder / ONNX_FILENAME),
    ).write(folder)
    return folder


def write_tabular(repository: Path, version: int) -> Path:
    features = FeatureSpec(input="features", columns=TAB_COLUMNS, request_features=list(reversed(TAB_COLUMNS)))
    return write_version(
        repository,
        "tab",
        version,
        tabular_model(seed=version),
        [("features", "FP32", [-1, 4])],
        [("score", "FP32", [-1, 1])],
        BatchingPolicy(max_batch_size=64, max_queue_delay_ms=5.0),
        features,
    )


def write_multi(repository: Path) -> Path:
    return write_version(
        repository,
        "multi",
        1,
        multi_model(),
        [("a", "FP32", [-1, 3]), ("b", "INT64", [-1, 2]), ("h", "FP16", [-1, 2]), ("c", "BYTES", [-1])],
        [
            ("a_sum", "FP32", [-1, 1]),
            ("b_twice", "INT64", [-1, 2]),
            ("a_positive", "BOOL", [-1, 3]),
            ("h_double", "FP16", [-1, 2]),
            ("c_same", "BYTES", [-1]),
        ],
        BatchingPolicy(max_batch_size=16, max_queue_delay_ms=1.0),
    )


def write_gated(repository: Path, name: str, max_queue_size: int) -> Path:
    """One row at a time through y = x, for `gated_serve.py` to hold: its gate, not the graph,
    decides when each run happens, so a test can keep a queue filled as long as it needs."""
    if not name.startswith(GATED_PREFIX):
        raise ValueError(f"gated_serve.py holds only models named {GATED_PREFIX}*, got {name!r}")
    return write_version(
        repository,
        name,
        1,
        identity_model(),
        [("x", "FP32", [-1, 1])],
        [("y", "FP32", [-1, 1])],
        BatchingPolicy(max_batch_size=1, max_queue_delay_ms=0.0, max_queue_size=max_queue_size),
    )


def write_corrupt(repository: Path, name: str, version: int = 1) -> Path:
    """A version whose model.onnx no longer matches the sha256 in its model.json."""
    folder = write_version(
        repository, name, version, tabular_model(seed=9), [("features", "FP32", [-1, 4])], [("score", "FP32", [-1, 1])]
    )
    (folder / ONNX_FILENAME).write_bytes(b"this is not an onnx model")
    return folder
