"""Parity proof: the ONNX model under onnxruntime (CPU) against its reference outputs.

Every graph `pipeline.export_checkpoint` may publish passes through `compare` against the
PyTorch module on the checkpoint's held-out rows, and every graph `importer.import_model`
may publish against the original ONNX file; a model that strays beyond the tolerance is
never written. Reduced-precision graphs are also judged by `metric_change` against the float
graph. torch is imported only by `torch_outputs`, so importing needs no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from exporters.errors import ExportError, MetricRegression, ParityError
from training.metrics import evaluate

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
        {name: np.ascontiguousarray(inputs[name][start:start + CHUNK_ROWS]) for name in names}
        for start in range(0, total, CHUNK_ROWS)
    ]


def torch_outputs(module: torch.nn.Module, inputs: Mapping[str, np.ndarray],
                  input_names: Sequence[str]) -> list[np.ndarray]:
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


def compare(stage: str, reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
            tolerance: float, against: str = "PyTorch") -> ParityReport:
    """Measure `candidate` against `reference` row by row; raise ParityError if too far.

    A row's difference is its largest absolute difference over every output element;
    NaN or infinite outputs count as infinitely far. `against` names the reference in
    messages ("PyTorch", or "the source file" for imports).
    """
    if len(reference) != len(candidate):
        raise ExportError(
            f"{stage} model returns {len(candidate)} outputs, {against} returns {len(reference)}"
        )
    per_output = []
    for expected, got in zip(reference, candidate, strict=True):
        if expected.shape != got.shape:
            raise ExportError(
                f"{stage} model output shape {list(got.shape)} differs from {against}'s "
                f"{list(expected.shape)}"
            )
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
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
    )
    if not report.passed:
        raise ParityError(stage, report.max_abs_diff, tolerance, report.rows, report.worst_row,
                          against)
    return report


def metric_change(stage: str, float_probabilities: np.ndarray, reduced_probabilities: np.ndarray,
                  labels: np.ndarray, max_auc_drop: float) -> dict[str, float]:
    """Reduced minus float `auc`, `accuracy`, `log_loss`; MetricRegression if AUC falls too far."""
    try:
        float_metrics = evaluate(float_probabilities, labels)
        reduced_metrics = evaluate(reduced_probabilities, labels)
    except ValueError as exc:
        raise ExportError(f"cannot measure the {stage} model's metric change: {exc}") from exc
    if float_metrics["auc"] - reduced_metrics["auc"] > max_auc_drop:
        raise MetricRegression(stage, "auc", float_metrics["auc"], reduced_metrics["auc"],
                               max_auc_drop)
    return {name: reduced_metrics[name] - float_metrics[name] for name in float_metrics}
