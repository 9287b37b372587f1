"""Reduced precision: int8 records its metric change, fp16 runs on CPU, both keep FP32 inputs/outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporters.errors import ExportError
from exporters.export.options import ExportOptions
from exporters.export.pipeline import ExportResult, export_checkpoint
from exporters.shared.checks import FP16_TOLERANCE, INT8_TOLERANCE
from server.contract.manifest import ONNX_FILENAME, ModelManifest
from training.checkpoints import load_checkpoint
from training.metrics import evaluate


def _run(version_dir: Path, name: str, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(version_dir / ONNX_FILENAME), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {name: rows})[0])


def _op_types(version_dir: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(version_dir / ONNX_FILENAME)).graph.node}


def test_int8_export_records_metric_change_against_the_float_graph(
    mlp_checkpoint: Path, exported_mlp: ExportResult, exported_mlp_int8: ExportResult
) -> None:
    result = exported_mlp_int8

    export = ModelManifest.read(result.version_dir).export
    assert export is not None and export.quantization == "int8" and not export.fp16
    assert set(export.metric_deltas) == {"auc", "accuracy", "log_loss"}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _op_types(result.version_dir)
    opset_import = onnx.load(str(result.version_dir / ONNX_FILENAME)).opset_import
    assert [entry.domain for entry in opset_import] == [""]
    assert result.parity[-1].stage == "int8"
    assert export.parity_max_abs_diff <= INT8_TOLERANCE
    # The deltas are exactly int8-minus-float on the held-out rows, float being the fp32 export.
    loaded = load_checkpoint(mlp_checkpoint)
    rows, labels = loaded.holdout_inputs["features"], loaded.holdout_labels
    int8_metrics = evaluate(_run(result.version_dir, "features", rows), labels)
    float_metrics = evaluate(_run(exported_mlp.version_dir, "features", rows), labels)
    for name, delta in export.metric_deltas.items():
        assert delta == pytest.approx(int8_metrics[name] - float_metrics[name], abs=1e-9)


def test_fp16_export_runs_on_cpu_with_fp32_inputs_and_outputs(transformer_checkpoint: Path, tmp_path: Path) -> None:
    result = export_checkpoint(transformer_checkpoint, tmp_path, ExportOptions(fp16=True))

    graph = onnx.load(str(result.version_dir / ONNX_FILENAME))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.graph.initializer)
    io_types = {v.type.tensor_type.elem_type for v in [*graph.graph.input, *graph.graph.output]}
    assert io_types == {onnx.TensorProto.FLOAT}
    manifest = result.manifest
    assert manifest.export is not None and manifest.export.fp16
    assert [s.datatype for s in [*manifest.inputs, *manifest.outputs]] == ["FP32", "FP32"]
    assert set(manifest.export.metric_deltas) == {"auc", "accuracy", "log_loss"}

    tokens = np.random.default_rng(0).normal(size=(3, 32, 64)).astype(np.float32)
    got = _run(result.version_dir, "tokens", tokens)
    with torch.no_grad():
        expected = load_checkpoint(transformer_checkpoint).module(torch.from_numpy(tokens)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=FP16_TOLERANCE, rtol=0)


def test_int8_and_fp16_together_are_refused() -> None:
    with pytest.raises(ExportError, match="choose one of --quantize int8 and --fp16"):
        ExportOptions(quantize="int8", fp16=True)


def test_opset_older_than_17_is_refused() -> None:
    with pytest.raises(ExportError, match="opset 16 is too old"):
        ExportOptions(opset=16)
