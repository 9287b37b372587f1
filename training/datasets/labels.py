"""A table's label column -> training targets for its task; the task is inferred from the values when not given.

Inference: 0/1 (or booleans) is binary; text, or whole numbers with few distinct values, is
multiclass; other numbers are regression. Every refusal names the column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.datasets.dataset import DatasetError
from training.tasks import ClassNames, Task

MAX_INFERRED_CLASSES = 32
"""Whole-number labels with more distinct values than this are inferred to be a regression target."""


@dataclass(frozen=True)
class Labels:
    """Targets for training: float32 0/1 (binary), int64 class indices into `classes`
    (multiclass) or float32 values (regression)."""

    task: Task
    targets: np.ndarray
    classes: ClassNames | None = None
    inferred: str | None = None
    """Why the task was inferred from the values; None when it was given."""


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numbers(values: pd.Series) -> np.ndarray | None:
    """The column as float64 when it holds numbers (or booleans), None when it holds text."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        numbers: np.ndarray = values.to_numpy(dtype=np.float64)
        return numbers
    return None


def _whole(numbers: np.ndarray) -> np.ndarray:
    whole: np.ndarray = np.isclose(numbers, np.round(numbers), rtol=0.0, atol=1e-9)
    return whole


def _infer(numbers: np.ndarray | None, values: pd.Series) -> tuple[Task, str]:
    if numbers is None:
        return "multiclass", f"text values ({values.nunique()} classes)"
    distinct = np.unique(numbers)
    if np.isin(distinct, (0.0, 1.0)).all():
        return "binary", "values 0/1"
    if not _whole(distinct).all():
        return "regression", "fractional numbers"
    if distinct.size > MAX_INFERRED_CLASSES:
        return "regression", f"{distinct.size} distinct whole numbers (more than {MAX_INFERRED_CLASSES} classes)"
    return "multiclass", f"{distinct.size} distinct whole numbers"


def _one_class(source: str, column: str, task: Task, value: object) -> DatasetError:
    return DatasetError(source, f"{task} labels need at least 2 classes; every row is {value!r}", column)


def encode_labels(values: pd.Series, task: Task | None, column: str, source: str) -> Labels:
    """Targets of `task` (inferred from `values` when None) from the label column `values`."""
    missing = values.isna().to_numpy()
    if missing.any():
        raise DatasetError(source, f"missing label at row {_first(missing)} ({int(missing.sum())} such rows)", column)
    numbers = _numbers(values)
    if numbers is not None:
        infinite = ~np.isfinite(numbers)
        if infinite.any():
            raise DatasetError(source, f"infinite label at row {_first(infinite)}", column)
    inferred = None
    if task is None:
        task, why = _infer(numbers, values)
        inferred = f"task {task} inferred from label column {column!r}: {why}"

    if task == "binary":
        if numbers is None:
            raise DatasetError(source, f"labels must be 0 or 1; got {values.iloc[0]!r} at row 0", column)
        bad = ~np.isin(numbers, (0.0, 1.0))
        if bad.any():
            row = _first(bad)
            raise DatasetError(source, f"labels must be 0 or 1; got {float(numbers[row])!r} at row {row}", column)
        if np.unique(numbers).size < 2:
            raise _one_class(source, column, task, int(numbers[0]))
        return Labels(task, numbers.astype(np.float32), inferred=inferred)

    if task == "regression":
        if numbers is None:
            text = pd.to_numeric(values, errors="coerce").isna().to_numpy()
            row = _first(text)
            raise DatasetError(
                source, f"regression labels must be numbers; got {values.iloc[row]!r} at row {row}", column
            )
        if np.unique(numbers).size < 2:
            raise DatasetError(
                source, f"regression target is constant (every row is {float(numbers[0])!r}); nothing to learn", column
            )
        return Labels(task, numbers.astype(np.float32), inferred=inferred)

    classes: ClassNames
    if numbers is not None:
        fractional = ~_whole(numbers)
        if fractional.any():
            row = _first(fractional)
            raise DatasetError(
                source,
                f"multiclass labels must be class names or whole numbers; got "
                f"{float(numbers[row])!r} at row {row} (a numeric target: --task regression)",
                column,
            )
        codes = np.round(numbers).astype(np.int64)
        classes = [int(c) for c in np.unique(codes)]
        index = np.searchsorted(np.asarray(classes, dtype=np.int64), codes)
    else:
        text_values = values.astype(str).to_numpy(dtype=str)
        names = np.unique(text_values)
        classes = [str(c) for c in names]
        index = np.searchsorted(names, text_values)
    if len(classes) < 2:
        raise _one_class(source, column, task, classes[0])
    return Labels(task, index.astype(np.int64), classes=classes, inferred=inferred)
