"""Validation metrics for binary classifiers (numpy only): used by training and by exporters' parity checks."""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties get average ranks)."""
    scores = np.asarray(probabilities, dtype=np.float64).ravel()
    truth = np.asarray(labels).ravel().astype(bool)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"AUC needs both classes; got {positives} positive and {negatives} negative labels"
        )
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average rank per block of tied scores, 1-based.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    block_ranks = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(block_ranks, ends - starts)
    u_statistic = ranks[truth].sum() - positives * (positives + 1) / 2.0
    return float(u_statistic / (positives * negatives))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy; probabilities are clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), _EPS, 1.0 - _EPS)
    y = np.asarray(labels, dtype=np.float64).ravel()
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def accuracy(probabilities: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """Share of rows whose thresholded probability equals the label."""
    predicted = np.asarray(probabilities).ravel() >= threshold
    return float(np.mean(predicted == np.asarray(labels).ravel().astype(bool)))


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`auc`, `accuracy` and `log_loss` of predicted probabilities against 0/1 labels."""
    p = np.asarray(probabilities).ravel()
    y = np.asarray(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probabilities have {p.size} rows but labels have {y.size}")
    if p.size == 0:
        raise ValueError("cannot evaluate zero rows")
    return {
        "auc": roc_auc(p, y),
        "accuracy": accuracy(p, y),
        "log_loss": log_loss(p, y),
    }
