"""OnnxRuntime and the executor on a real tiny ONNX graph built with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from server.contract.manifest import TensorSpec
from server.errors import InferenceFailed, ModelLoadFailed
from server.runtime.executor import RuntimeExecutor
from server.runtime.onnx import OnnxRuntime, _IoBindingRunner, choose_providers
from tests.fakes import tiny_mlp_reference, write_tiny_mlp

CPU = "CPUExecutionProvider"


@pytest.fixture
def mlp(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    path = tmp_path / "model.onnx"
    weight, bias = write_tiny_mlp(path, features=3, outputs=2)
    return path, weight, bias


def test_runs_a_batch_and_matches_numpy(mlp: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, weight, bias = mlp
    runtime = OnnxRuntime(path, [CPU], intra_op_threads=1, inter_op_threads=1)
    x = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    out = runtime.run({"x": x})
    assert set(out) == {"y"}
    np.testing.assert_allclose(out["y"], tiny_mlp_reference(x, weight, bias), rtol=1e-5)
    runtime.close()


def test_reports_graph_io_with_a_dynamic_batch_axis(mlp: tuple[Path, np.ndarray, np.ndarray]) -> None:
    runtime = OnnxRuntime(mlp[0], [CPU])
    assert runtime.inputs == [TensorSpec(name="x", datatype="FP32", shape=[-1, 3])]
    assert runtime.outputs == [TensorSpec(name="y", datatype="FP32", shape=[-1, 2])]


def test_unavailable_preferred_provider_is_skipped_and_the_one_in_use_reported(
    mlp: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    runtime = OnnxRuntime(mlp[0], ["CUDAExecutionProvider", CPU])
    assert runtime.provider == CPU
    assert runtime.inline_safe  # on the CPU provider a run is this thread's computation only


def test_no_usable_provider_is_a_load_failure_naming_both_lists() -> None:
    with pytest.raises(ModelLoadFailed, match=r"CUDAExecutionProvider.*CPUExecutionProvider"):
        choose_providers(["CUDAExecutionProvider"], [CPU])
    assert choose_providers(["CUDAExecutionProvider", CPU], [CPU]) == [CPU]


def test_garbage_model_file_is_a_load_failure(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"definitely not a protobuf \x00\xff" * 10)
    with pytest.raises(ModelLoadFailed, match="onnxruntime could not load model.onnx"):
        OnnxRuntime(path, [CPU])


def test_onnxruntime_error_becomes_inference_failed(mlp: tuple[Path, np.ndarray, np.ndarray]) -> None:
    runtime = OnnxRuntime(mlp[0], [CPU])
    with pytest.raises(InferenceFailed, match="onnxruntime failed"):
        runtime.run({"x": np.zeros((2, 3), dtype=np.float64)})


def test_closed_runtime_refuses_to_run(mlp: tuple[Path, np.ndarray, np.ndarray]) -> None:
    runtime = OnnxRuntime(mlp[0], [CPU])
    runtime.close()
    with pytest.raises(InferenceFailed, match="closed"):
        runtime.run({"x": np.zeros((1, 3), dtype=np.float32)})


def test_io_binding_path_gives_the_same_numbers(mlp: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, weight, bias = mlp
    session = ort.InferenceSession(str(path), providers=[CPU])
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    (y,) = _IoBindingRunner("cpu").run(session, {"x": x}, ["y"])
    np.testing.assert_allclose(y, tiny_mlp_reference(x, weight, bias), rtol=1e-5)


async def test_executor_runs_off_the_loop_and_returns_outputs(mlp: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, weight, bias = mlp
    executor = RuntimeExecutor(OnnxRuntime(path, [CPU]), instances=2, thread_name="test-onnx")
    try:
        x = np.ones((3, 3), dtype=np.float32)
        out = await executor.run({"x": x})
        np.testing.assert_allclose(out["y"], tiny_mlp_reference(x, weight, bias), rtol=1e-5)
        with pytest.raises(InferenceFailed):
            await executor.run({"x": np.ones((3, 4), dtype=np.float32)})
    finally:
        executor.shutdown(wait=True)


def test_bytes_inputs_reach_a_string_graph_as_text(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["o"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("o", TensorProto.STRING, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    runtime = OnnxRuntime(path, [CPU])
    assert runtime.inputs == [TensorSpec(name="s", datatype="BYTES", shape=[-1])]
    out = runtime.run({"s": np.array([b"caf\xc3\xa9", b""], dtype=object)})
    assert out["o"].tolist() == ["caf\u00e9", ""]
    with pytest.raises(InferenceFailed, match="not UTF-8"):
        runtime.run({"s": np.array([b"\xff"], dtype=object)})
