"""`hotserve import --reference`: a CSV/Parquet table -> the graph's inputs, labels, drift reference, metrics.

The table plays the role the held-out rows play for an exported checkpoint: the importer
checks parity on its rows, records the drift reference (`DriftReference`, built with
`training.reference_stats`, as training does) and, with a label column, the model's metrics.
Two layouts map onto a graph: one 2-D input whose columns are `--features` in order (what
scikit-learn models converted with one `FloatTensorType([None, k])` take), or one input per
column, named as the column (converters' `initial_types` per feature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from exporters.errors import ExportError
from server.contract.manifest import NUMPY_DTYPES, DriftReference, Task, TensorSpec, sha256_file
from training.datasets.dataset import DatasetError
from training.datasets.tables import read_table
from training.metrics import evaluate
from training.reference_stats import histogram, prediction_histogram


@dataclass(frozen=True)
class ReferenceRows:
    """The table's rows as graph inputs, with what the manifest records about them."""

    path: Path
    sha256: str
    inputs: dict[str, np.ndarray]
    columns: list[str]
    """Feature columns, in the order they feed the graph."""
    numeric: dict[str, np.ndarray]
    """Numeric feature columns (float64): what drift histograms describe."""
    labels: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))


def read_reference(
    path: Path, inputs: Sequence[TensorSpec], features: Sequence[str] | None, label: str | None
) -> ReferenceRows:
    """Read the table and lay its columns out as the graph's inputs; ExportError naming what misfits."""
    try:
        frame = read_table(path)
    except DatasetError as exc:
        raise ExportError(str(exc)) from exc
    if len(frame) == 0:
        raise ExportError(f"reference table {path} has no rows")
    missing = [c for c in [*(features or []), *([label] if label else [])] if c not in frame.columns]
    if missing:
        raise ExportError(f"reference table {path} has no column {missing[0]!r} (columns: {list(frame.columns)})")
    if label is not None and features is not None and label in features:
        raise ExportError(f"column {label!r} is given as a feature and as the label")
    arrays, columns = _layout(path, frame, inputs, features, label)
    labels = None
    if label is not None:
        labels = _numeric(path, frame, label)
    numeric = {c: values for c in columns if (values := _numeric(path, frame, c, strict=False)) is not None}
    return ReferenceRows(path, sha256_file(path), arrays, columns, numeric, labels)


def _layout(
    path: Path, frame: pd.DataFrame, inputs: Sequence[TensorSpec], features: Sequence[str] | None, label: str | None
) -> tuple[dict[str, np.ndarray], list[str]]:
    names = [spec.name for spec in inputs]
    if all(spec.name in frame.columns and spec.shape in ([-1], [-1, 1]) for spec in inputs) and (
        features is None or sorted(features) == sorted(names)
    ):
        return {
            spec.name: _cast(path, frame[spec.name].to_numpy(), spec, spec.name).reshape([-1] + spec.shape[1:])
            for spec in inputs
        }, names
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise ExportError(
            f"cannot lay the columns of {path.name} out as the inputs "
            f"{[(s.name, s.shape) for s in inputs]}: a table feeds one 2-D input "
            f"(--features in column order) or one input per column named as the column"
        )
    (spec,) = inputs
    columns = list(features) if features is not None else [c for c in frame.columns if c != label]
    width = spec.shape[1]
    if width != -1 and width != len(columns):
        raise ExportError(
            f"input {spec.name!r} takes {width} columns, {len(columns)} features are "
            f"given ({columns}); name them in order with --features"
        )
    matrix = np.stack([_cast(path, frame[c].to_numpy(), spec, c) for c in columns], axis=1)
    return {spec.name: matrix}, columns


def _cast(path: Path, values: np.ndarray, spec: TensorSpec, column: str) -> np.ndarray:
    dtype = NUMPY_DTYPES[spec.datatype]
    if dtype.kind == "O":
        return np.array([str(v) for v in values], dtype=object)
    try:
        cast = np.asarray(values).astype(dtype)
    except (TypeError, ValueError) as exc:
        raise ExportError(
            f"column {column!r} of {path.name} cannot feed input {spec.name!r} ({spec.datatype}): {exc}"
        ) from exc
    if dtype.kind == "f" and not np.isfinite(cast).all():
        row = int(np.flatnonzero(~np.isfinite(cast))[0])
        raise ExportError(f"column {column!r} of {path.name} has a missing or non-finite value at row {row}")
    return cast


def _numeric(path: Path, frame: pd.DataFrame, column: str, strict: bool = True) -> np.ndarray | None:
    values: np.ndarray = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    if np.isfinite(values).all():
        return values
    if strict:
        raise ExportError(
            f"column {column!r} of {path.name} must be numeric and complete "
            f"(first bad row {int(np.flatnonzero(~np.isfinite(values))[0])})"
        )
    return None


def drift_reference(
    reference: ReferenceRows, prediction_output: str | None, prediction: np.ndarray | None
) -> DriftReference:
    """Histograms of the numeric feature columns and of the prediction output's values.

    Probabilities (every value in [0, 1]) get `prediction_histogram`'s edges spanning [0, 1],
    as trained models do; other outputs (scores, regression values) quantile edges.
    """
    features = [histogram(name, values) for name, values in reference.numeric.items()]
    described = None
    if prediction is not None and prediction.dtype.kind in "iuf":
        flat = prediction.astype(np.float64).ravel()
        described = (
            prediction_histogram(flat)
            if flat.min() >= 0.0 and flat.max() <= 1.0
            else histogram(prediction_output or "prediction", flat)
        )
    return DriftReference(
        features=features,
        prediction=described,
        prediction_output=prediction_output if described is not None else None,
        sample_size=reference.rows,
    )


def model_metrics(prediction: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float], Task]:
    """Metrics of `prediction` against the label column, and the task they assume (what
    `hotserve import` records in the prediction contract unless `--task` says).

    Probabilities with one column per class (classifiers converted without ZipMap) or one
    probability per row: classification (binary: `auc`, `accuracy`, `log_loss`; multiclass:
    `accuracy`, `log_loss`), labels being class indices. One value per row otherwise:
    regression (`rmse`, `mae`).
    """
    values = prediction.astype(np.float64).reshape(len(prediction), -1)
    probabilities = bool(values.size) and values.min() >= 0.0 and values.max() <= 1.0
    classes = values.shape[1]
    is_index = bool(np.all(labels == np.round(labels))) and labels.min() >= 0
    if probabilities and classes <= 2 and set(np.unique(labels)) <= {0.0, 1.0}:
        positive = values[:, -1]
        return evaluate(positive, labels), "binary"
    if probabilities and classes > 2 and is_index and labels.max() < classes:
        index = labels.astype(np.int64)
        picked = np.clip(values[np.arange(len(index)), index], 1e-7, 1.0)
        return {
            "accuracy": float(np.mean(values.argmax(axis=1) == index)),
            "log_loss": float(-np.mean(np.log(picked))),
        }, "multiclass"
    if classes == 1:
        error = values[:, 0] - labels
        return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}, "regression"
    raise ExportError(
        f"cannot tell which metrics apply: the prediction has {classes} values per row "
        f"and the labels are {np.unique(labels)[:5].tolist()}...; choose another "
        f"--prediction-output or import without --label"
    )
