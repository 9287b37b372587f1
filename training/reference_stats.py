"""Reference statistics of the training data, recorded in checkpoints for the server's drift monitor (PSI)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.contract.manifest import DriftReference, ReferenceHistogram
from training.tasks import LABEL_OUTPUT, SCORE_OUTPUT, ClassNames, Task

DEFAULT_BINS = 10
MAX_CATEGORIES = 50
"""Most frequent values of a categorical column kept as bins; the rest share the "other" bin."""


def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges: midpoints between distinct values when there are few, training quantiles otherwise."""
    distinct = np.unique(values)
    if distinct.size <= bins:
        if distinct.size == 1:
            return np.array([distinct[0] - 0.5, distinct[0] + 0.5])
        middles = (distinct[:-1] + distinct[1:]) / 2.0
        first_gap = distinct[1] - distinct[0]
        last_gap = distinct[-1] - distinct[-2]
        return np.concatenate(([distinct[0] - first_gap / 2.0], middles, [distinct[-1] + last_gap / 2.0]))
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    return edges


def histogram(
    name: str, values: np.ndarray, bins: int = DEFAULT_BINS, edges: np.ndarray | None = None
) -> ReferenceHistogram:
    """Histogram of `values` with proportions summing to 1; values outside the edges count in the end bins."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ValueError(f"{name}: cannot describe zero values")
    if edges is None:
        edges = _edges(flat, bins)
    counts, _ = np.histogram(np.clip(flat, edges[0], edges[-1]), bins=edges)
    return ReferenceHistogram(
        name=name,
        bin_edges=[float(e) for e in edges],
        proportions=[float(c) for c in counts / counts.sum()],
    )


def categorical_histogram(name: str, values: np.ndarray, max_categories: int = MAX_CATEGORIES) -> ReferenceHistogram:
    """One bin per category value (the `max_categories` most frequent), proportions of all rows.

    The categories left out (and NaN) are what the server's "other" bin expects: `1 - sum(proportions)`.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[~np.isnan(flat)]
    if flat.size == 0:
        raise ValueError(f"{name}: cannot describe zero values")
    uniques, counts = np.unique(flat, return_counts=True)
    kept = np.sort(np.argsort(-counts, kind="stable")[:max_categories])
    categories, shares = uniques[kept], counts[kept] / flat.size
    return ReferenceHistogram(
        name=name,
        bin_edges=[float(e) for e in _edges(categories, categories.size)],
        proportions=[float(p) for p in shares],
        categories=[float(c) for c in categories],
    )


def prediction_histogram(probabilities: np.ndarray, bins: int = DEFAULT_BINS) -> ReferenceHistogram:
    """Predicted-probability distribution: quantile edges inside, widened to span all of [0, 1]."""
    flat = np.asarray(probabilities, dtype=np.float64).ravel()
    inner = np.quantile(flat, np.linspace(0.0, 1.0, bins + 1))[1:-1]
    edges = np.unique(np.concatenate(([0.0], np.clip(inner, 0.0, 1.0), [1.0])))
    return histogram("probability", flat, edges=edges)


def label_histogram(class_indices: np.ndarray, classes: ClassNames) -> ReferenceHistogram:
    """Share of each predicted class, one bin per class in `classes` order (edges around 0..K-1)."""
    counts = np.bincount(np.asarray(class_indices, dtype=np.int64).ravel(), minlength=len(classes))
    return ReferenceHistogram(
        name=LABEL_OUTPUT,
        bin_edges=[k - 0.5 for k in range(len(classes) + 1)],
        proportions=[float(c) for c in counts / counts.sum()],
        categories=[str(c) for c in classes]
        if any(isinstance(c, str) for c in classes)
        else [float(c) for c in classes],
    )


def prediction_reference(
    task: Task, scores: np.ndarray, classes: ClassNames | None = None, bins: int = DEFAULT_BINS
) -> tuple[ReferenceHistogram, str]:
    """(histogram, output it describes) of the model's predictions: the probability for
    binary, the predicted class mix (`label`) for multiclass, the predicted values for regression."""
    if task == "multiclass":
        if classes is None:
            raise ValueError("a multiclass prediction reference needs the classes")
        return label_histogram(np.asarray(scores).argmax(axis=1), classes), LABEL_OUTPUT
    if task == "regression":
        return histogram(SCORE_OUTPUT[task], scores, bins), SCORE_OUTPUT[task]
    return prediction_histogram(scores, bins), SCORE_OUTPUT[task]


def drift_reference(
    inputs: np.ndarray,
    columns: Sequence[str],
    prediction: tuple[ReferenceHistogram, str],
    bins: int = DEFAULT_BINS,
    categorical: Sequence[str] = (),
) -> DriftReference:
    """Per-feature histograms of the raw training columns (tabular only) and the `prediction_reference`.

    Numeric columns get quantile bins; `categorical` columns one bin per category value.
    """
    features = [
        categorical_histogram(name, inputs[:, i]) if name in categorical else histogram(name, inputs[:, i], bins)
        for i, name in enumerate(columns)
    ]
    predicted, output = prediction
    return DriftReference(
        features=features,
        prediction=predicted,
        prediction_output=output,
        sample_size=int(inputs.shape[0]),
    )
