"""Parity proof: the ONNX model under onnxruntime (CPU) against its reference outputs.

Every graph `export.pipeline.export_checkpoint` may publish passes through `compare` against the
PyTorch module on the checkpoint's held-out rows, and every graph `imports.pipeline.import_model`
may publish against the original ONNX file; a model that strays beyond the tolerance is
never written. Differences are in output units (probabilities), or in target standard
deviations for a regression model, so one tolerance means the same for minutes and for
dollars. A multiclass `label` must match too (`compare_labels`). Reduced-precision graphs are
also judged by `metric_change` against the float graph, on the metric that matters for the
task. torch is imported only by `torch_outputs`, so importing needs no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from exporters.errors import ExportError, MetricRegression, ParityError
from exporters.shared.checks import MAX_ACCURACY_DROP, MAX_AUC_DROP, MAX_RMSE_INCREASE
from training.metrics import evaluate_task
from training.tasks import Task

if TYPE_CHECKING:
    import torch

CHUNK_ROWS = 256
"""Rows per forward pass, bounding memory for large held-out sets and big models."""


@dataclass(frozen=True)
class ParityReport:
    """How far one ONNX graph's outputs are from PyTorch's on the held-out rows."""

    stage: str
    rows: int
    max_abs_diff: float
    mean_abs_diff: float
    """Mean over rows of each row's largest difference."""
    worst_row: int
    tolerance: float
    scale: float = 1.0
    """Differences were divided by this (a regression target's standard deviation)."""
    near_ties: int = 0
    """Rows whose multiclass label differs from PyTorch's where PyTorch's top classes were within tolerance."""

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def _chunks(inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    rows = {len(inputs[name]) for name in names}
    if len(rows) != 1:
        raise ExportError(f"held-out inputs disagree on their row count: {sorted(rows)}")
    total = rows.pop()
    if total == 0:
        raise ExportError("the checkpoint holds no held-out rows to check parity on")
    return [
        {name: np.ascontiguousarray(inputs[name][start : start + CHUNK_ROWS]) for name in names}
        for start in range(0, total, CHUNK_ROWS)
    ]


def torch_outputs(
    module: torch.nn.Module, inputs: Mapping[str, np.ndarray], input_names: Sequence[str]
) -> list[np.ndarray]:
    """The module's outputs on `inputs` (positional in `input_names` order), chunk by chunk."""
    import torch

    module.eval()
    pieces: list[list[np.ndarray]] = []
    with torch.no_grad():
        for chunk in _chunks(inputs, input_names):
            result = module(*(torch.from_numpy(chunk[name]) for name in input_names))
            tensors = result if isinstance(result, (tuple, list)) else (result,)
            pieces.append([t.detach().cpu().numpy() for t in tensors])
    return [np.concatenate(parts) for parts in zip(*pieces, strict=True)]


def onnx_outputs(path: Path, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The ONNX graph's outputs on `inputs` under onnxruntime's CPU provider."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    pieces = [session.run(None, chunk) for chunk in _chunks(inputs, names)]
    return [np.concatenate(parts) for parts in zip(*pieces, strict=True)]


def compare(
    stage: str,
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    tolerance: float,
    scale: float = 1.0,
    against: str = "PyTorch",
) -> ParityReport:
    """Measure `candidate` against `reference` row by row; raise ParityError if too far.

    A row's difference is its largest absolute difference over every output element,
    divided by `scale`; NaN or infinite outputs count as infinitely far. `against` names the
    reference in messages ("PyTorch", or "the source file" for imports).
    """
    if len(reference) != len(candidate):
        raise ExportError(f"{stage} model returns {len(candidate)} outputs, {against} returns {len(reference)}")
    per_output = []
    for expected, got in zip(reference, candidate, strict=True):
        if expected.shape != got.shape:
            raise ExportError(
                f"{stage} model output shape {list(got.shape)} differs from {against}'s {list(expected.shape)}"
            )
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64)) / scale
        diff = np.where(np.isfinite(diff), diff, np.inf)
        per_output.append(diff.reshape(len(diff), -1).max(axis=1, initial=0.0))
    if len({len(d) for d in per_output}) > 1:
        raise ExportError(f"{stage} model outputs disagree on their row count")
    per_row = np.max(per_output, axis=0) if per_output else np.zeros(0)
    rows = len(per_row)
    report = ParityReport(
        stage=stage,
        rows=rows,
        max_abs_diff=float(per_row.max(initial=0.0)),
        mean_abs_diff=float(per_row.mean()) if rows else 0.0,
        worst_row=int(np.argmax(per_row)) if rows else 0,
        tolerance=tolerance,
        scale=scale,
    )
    if not report.passed:
        reference_name = "torch" if against == "PyTorch" else against
        measure = None if scale == 1.0 else f"max |onnx - {reference_name}| / target std ({scale:.4g})"
        raise ParityError(stage, report.max_abs_diff, tolerance, report.rows, report.worst_row, against, measure)
    return report


def compare_labels(
    stage: str,
    probabilities: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[int] | Sequence[str],
    tolerance: float,
) -> int:
    """Check a graph's class `labels` against PyTorch's class `indices` (and `probabilities`).

    A label may differ only where PyTorch's probability for it is within `tolerance` of its
    top class (a near tie that rounding can flip); returns how many rows did. Anything else,
    including a label that is no class at all, is a ParityError.
    """
    position = {value: k for k, value in enumerate(classes)}
    got = np.array(
        [position.get(value.item() if isinstance(value, np.generic) else value, -1) for value in labels.ravel()],
        dtype=np.int64,
    )
    expected = np.asarray(indices, dtype=np.int64).ravel()
    if got.shape != expected.shape:
        raise ExportError(f"{stage} model returns {got.size} labels for {expected.size} rows")
    differs = np.flatnonzero(got != expected)
    gap = np.full(expected.size, np.inf)  # a label that is no class stays infinitely far
    known = differs[got[differs] >= 0]
    gap[known] = probabilities[known, expected[known]] - probabilities[known, got[known]]
    bad = differs[gap[differs] > tolerance]
    if bad.size:
        worst = int(bad[0])
        raise ParityError(
            stage,
            float(gap[worst]),
            tolerance,
            expected.size,
            worst,
            measure=f"label {labels.ravel()[worst]!r} vs PyTorch's {classes[expected[worst]]!r}: "
            "PyTorch's probability lead of its class",
        )
    return int(differs.size)


def metric_change(
    stage: str,
    float_outputs: np.ndarray,
    reduced_outputs: np.ndarray,
    labels: np.ndarray,
    max_auc_drop: float = MAX_AUC_DROP,
    *,
    task: Task = "binary",
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    max_rmse_increase: float = MAX_RMSE_INCREASE,
) -> dict[str, float]:
    """Reduced minus float value of each of the task's metrics, from its score output.

    Refuses (MetricRegression) a binary model whose AUC drops by more than `max_auc_drop`,
    a multiclass one whose accuracy drops by more than `max_accuracy_drop`, and a regression
    one whose RMSE grows by more than the fraction `max_rmse_increase`.
    """
    try:
        float_metrics = evaluate_task(task, float_outputs, labels)
        reduced_metrics = evaluate_task(task, reduced_outputs, labels)
    except ValueError as exc:
        raise ExportError(f"cannot measure the {stage} model's metric change: {exc}") from exc
    if task == "regression":
        before, after = float_metrics["rmse"], reduced_metrics["rmse"]
        if after > before * (1.0 + max_rmse_increase):
            raise MetricRegression(stage, "rmse", before, after, max_rmse_increase, relative=True)
    else:
        metric, max_drop = ("accuracy", max_accuracy_drop) if task == "multiclass" else ("auc", max_auc_drop)
        if float_metrics[metric] - reduced_metrics[metric] > max_drop:
            raise MetricRegression(stage, metric, float_metrics[metric], reduced_metrics[metric], max_drop)
    return {name: reduced_metrics[name] - float_metrics[name] for name in float_metrics}
