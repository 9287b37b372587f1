"""Seeded train/validation split of a dataset's rows: stratified by class for classifiers, plain for regression."""

from __future__ import annotations

import numpy as np

from training.tasks import ClassNames, Task


def _take(rows: np.ndarray, val_fraction: float) -> int:
    """Validation rows out of `rows.size`: at least one, and at least one left to train on."""
    return min(rows.size - 1, max(1, round(rows.size * val_fraction)))


def split_rows(
    task: Task, labels: np.ndarray, val_fraction: float, seed: int, classes: ClassNames | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices, sorted; for classifiers each class is in both.

    Raises ValueError when the fraction is out of range or a class (or the whole table, for
    regression) has fewer than two rows.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    if task == "regression":
        if labels.size < 2:
            raise ValueError(f"need at least 2 rows to split train/validation; got {labels.size}")
        rows = rng.permutation(labels.size)
        n_val = _take(rows, val_fraction)
        return np.sort(rows[n_val:]), np.sort(rows[:n_val])
    strata: list[tuple[float, str]] = (
        [(float(k), f"class {name!r}") for k, name in enumerate(classes or ())]
        if task == "multiclass"
        else [(0.0, "label 0"), (1.0, "label 1")]
    )
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for value, name in strata:
        rows = np.flatnonzero(labels == value)
        if rows.size < 2:
            raise ValueError(
                f"need at least 2 rows of {name} to split train/validation; "
                f"got {rows.size} of {labels.size} (use more rows)"
            )
        rows = rng.permutation(rows)
        n_val = _take(rows, val_fraction)
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
