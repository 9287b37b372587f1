"""Reference statistics of the training data, recorded in checkpoints for the server's drift monitor (PSI)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.registry.manifest import DriftReference, ReferenceHistogram

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


def histogram(name: str, values: np.ndarray, bins: int = DEFAULT_BINS, edges: np.ndarray | None = None) -> ReferenceHistogram:
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


def drift_reference(
    inputs: np.ndarray,
    columns: Sequence[str],
    probabilities: np.ndarray,
    prediction_output: str,
    bins: int = DEFAULT_BINS,
    categorical: Sequence[str] = (),
) -> DriftReference:
    """Per-feature histograms of the raw training columns (tabular only) and of the predictions.

    Numeric columns get quantile bins; `categorical` columns one bin per category value.
    """
    features = [
        categorical_histogram(name, inputs[:, i]) if name in categorical else histogram(name, inputs[:, i], bins)
        for i, name in enumerate(columns)
    ]
    return DriftReference(
        features=features,
        prediction=prediction_histogram(probabilities, bins),
        prediction_output=prediction_output,
        sample_size=int(inputs.shape[0]),
    )
