"""Exported graphs reproduce PyTorch: fp32 parity, any batch size, preprocessing baked into the graph."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from exporters.errors import ExportError, MetricRegression, ParityError, SignatureMismatch
from exporters.export.pipeline import ExportResult, export_loaded
from exporters.shared.checks import FP32_TOLERANCE
from exporters.shared.parity import compare, metric_change
from server.contract.manifest import ONNX_FILENAME
from training.checkpoints import load_checkpoint
from training.datasets import fraud
from training.models import ProbabilityModel


def _session(result: ExportResult) -> ort.InferenceSession:
    return ort.InferenceSession(str(result.version_dir / ONNX_FILENAME), providers=["CPUExecutionProvider"])


def _torch(module: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(rows)).numpy())


@pytest.mark.parametrize("exported", ["exported_mlp", "exported_transformer"])
def test_published_graph_matches_torch_on_held_out_rows(exported: str, request: pytest.FixtureRequest) -> None:
    result: ExportResult = request.getfixturevalue(exported)
    loaded = load_checkpoint(result.checkpoint)
    ((name, rows),) = loaded.holdout_inputs.items()

    got = _session(result).run(["probability"], {name: rows.astype(np.float32)})[0]
    expected = _torch(loaded.module, rows.astype(np.float32))

    assert got.shape == (len(rows),)
    assert np.abs(got - expected).max() <= FP32_TOLERANCE
    export = result.manifest.export
    assert export is not None
    assert export.parity_rows == len(rows)
    assert export.parity_max_abs_diff <= FP32_TOLERANCE
    assert [r.stage for r in result.parity] == ["fp32", "optimised fp32"]


@pytest.mark.parametrize("rows", [1, 100])
def test_mlp_graph_serves_any_batch_size(exported_mlp: ExportResult, rows: int) -> None:
    loaded = load_checkpoint(exported_mlp.checkpoint)
    columns = loaded.metadata.features.columns if loaded.metadata.features else []
    raw = fraud.generate(rows=max(rows, 20), seed=11)[columns].to_numpy(np.float32)[:rows]

    got = _session(exported_mlp).run(None, {"features": raw})[0]

    assert got.shape == (rows,)
    np.testing.assert_allclose(got, _torch(loaded.module, raw), atol=FP32_TOLERANCE, rtol=0)


@pytest.mark.parametrize("rows", [1, 100])
def test_transformer_graph_serves_any_batch_size(exported_transformer: ExportResult, rows: int) -> None:
    loaded = load_checkpoint(exported_transformer.checkpoint)
    tokens = np.random.default_rng(rows).normal(size=(rows, 32, 64)).astype(np.float32)

    got = _session(exported_transformer).run(None, {"tokens": tokens})[0]

    assert got.shape == (rows,)
    np.testing.assert_allclose(got, _torch(loaded.module, tokens), atol=FP32_TOLERANCE, rtol=0)


def test_raw_feature_rows_need_no_client_side_preprocessing(exported_mlp: ExportResult) -> None:
    """Raw demo rows, by column name in the manifest's order, score as the training pipeline does."""
    loaded = load_checkpoint(exported_mlp.checkpoint)
    transform = loaded.metadata.preprocessing
    assert transform is not None and exported_mlp.manifest.features is not None
    raw = fraud.generate(rows=200, seed=5)[exported_mlp.manifest.features.columns].to_numpy(np.float32)

    onnx_probabilities = _session(exported_mlp).run(None, {"features": raw})[0]
    # The trainer's path: transform in numpy, then the body, then the sigmoid.
    assert isinstance(loaded.module, ProbabilityModel)
    body = loaded.module.body
    with torch.no_grad():
        pipeline = torch.sigmoid(body(torch.from_numpy(transform.apply(raw)))).numpy()

    np.testing.assert_allclose(onnx_probabilities, pipeline, atol=FP32_TOLERANCE, rtol=0)
    np.testing.assert_allclose(onnx_probabilities, _torch(loaded.module, raw), atol=FP32_TOLERANCE, rtol=0)
    # The body reads the one-hot-expanded matrix, not raw columns: the graph holds the transform.
    assert transform.output_dim > raw.shape[1]


class ExportDivergent(torch.nn.Module):
    """Halves its output only while torch.export traces it, so graph and eager disagree —
    the class of bug (Python branches baked in at export) parity exists to catch."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probability: torch.Tensor = self.inner(features)
        return probability * 0.5 if torch.compiler.is_exporting() else probability


def test_graph_that_strays_from_torch_is_refused_and_nothing_is_published(mlp_checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(mlp_checkpoint)
    divergent = dataclasses.replace(loaded, module=ExportDivergent(loaded.module).eval())

    with pytest.raises(ParityError) as failure:
        export_loaded(divergent, tmp_path)

    assert failure.value.stage == "fp32"
    assert failure.value.max_abs_diff > 1e-3
    assert failure.value.rows == len(loaded.holdout_labels)
    assert "exceeds tolerance 0.0001" in str(failure.value)
    assert list(tmp_path.iterdir()) == []


def test_compare_reports_worst_row_and_refuses_beyond_tolerance() -> None:
    reference = [np.array([0.1, 0.2, 0.3], dtype=np.float32)]
    candidate = [np.array([0.1, 0.25, 0.3], dtype=np.float32)]

    report = compare("fp16", reference, candidate, tolerance=0.1)
    assert report.worst_row == 1
    assert report.max_abs_diff == pytest.approx(0.05, abs=1e-6)
    assert report.rows == 3

    with pytest.raises(ParityError) as failure:
        compare("fp16", reference, candidate, tolerance=0.01)
    assert (failure.value.worst_row, failure.value.tolerance) == (1, 0.01)


def test_compare_counts_nan_output_as_infinitely_far() -> None:
    with pytest.raises(ParityError) as failure:
        compare("fp32", [np.zeros(4, np.float32)], [np.array([0, np.nan, 0, 0], np.float32)], 1.0)
    assert failure.value.max_abs_diff == float("inf")
    assert failure.value.worst_row == 1


def test_compare_refuses_outputs_of_another_shape() -> None:
    with pytest.raises(ExportError, match=r"shape \[4, 1\] differs from PyTorch's \[4\]"):
        compare("fp32", [np.zeros(4, np.float32)], [np.zeros((4, 1), np.float32)], 1.0)


def test_metric_change_is_reduced_minus_float() -> None:
    labels = np.array([0, 0, 1, 1])
    float_p = np.array([0.1, 0.4, 0.6, 0.9])
    reduced_p = np.array([0.1, 0.7, 0.6, 0.9])  # one negative now outranks a positive

    deltas = metric_change("int8", float_p, reduced_p, labels, max_auc_drop=0.5)

    assert deltas["auc"] == pytest.approx(0.75 - 1.0)
    assert deltas["accuracy"] == pytest.approx(0.75 - 1.0)
    assert deltas["log_loss"] > 0


def test_metric_change_refuses_an_auc_drop_beyond_the_limit() -> None:
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(MetricRegression, match="auc = 0.7500 vs 1.0000"):
        metric_change("int8", np.array([0.1, 0.4, 0.6, 0.9]), np.array([0.1, 0.7, 0.6, 0.9]), labels, max_auc_drop=0.01)


class ColumnOutput(torch.nn.Module):
    """Returns `[N, 1]` where the checkpoint's signature declares `probability` as `[N]`."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probability: torch.Tensor = self.inner(features)
        return probability.unsqueeze(-1)


def test_graph_whose_output_differs_from_the_declared_signature_is_refused(
    mlp_checkpoint: Path, tmp_path: Path
) -> None:
    loaded = load_checkpoint(mlp_checkpoint)
    reshaped = dataclasses.replace(loaded, module=ColumnOutput(loaded.module).eval())

    with pytest.raises(SignatureMismatch) as failure:
        export_loaded(reshaped, tmp_path)

    assert failure.value.what == "outputs"
    assert "'shape': [-1, 1]" in str(failure.value) and "'shape': [-1]" in str(failure.value)
    assert list(tmp_path.iterdir()) == []
