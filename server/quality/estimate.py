"""Label-free quality estimates of a classifier from its own probabilities (confidence-based
performance estimation, CBPE: NannyML, https://nannyml.readthedocs.io/en/stable/how_it_works/
performance_estimation.html).

If a model's probabilities are calibrated, a row scored p is positive with probability p, so
the expected confusion matrix, and every metric of it, follows from the scores alone:

- binary accuracy at threshold t: mean of p where p >= t, else 1 - p;
- binary AUC: the ROC curve of expected true and false positives, cumulated over the scores in
  descending order (tied scores move together), integrated by the trapezoid rule;
- multiclass accuracy: mean of the top class's probability; macro-F1: each class's F1 of its
  expected true positives (its probability summed over rows predicted as it), false positives
  (one minus it there) and false negatives (its probability summed over the other rows).

Regression has no label-free estimate here. The estimate is only as good as the calibration:
live quality exports how far it was off once labels come (`estimate_error`).
"""

from __future__ import annotations

import numpy as np

from server.contract.manifest import Task


def estimate(task: Task, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The estimated metrics of `scores` (binary: [N] positive probabilities; multiclass: [N, K]
    class probabilities); {} for regression, no rows, or multiclass scores that are classes."""
    if task == "binary":
        p = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
        if p.size == 0:
            return {}
        figures = {"accuracy": float(np.mean(np.where(p >= threshold, p, 1.0 - p)))}
        auc = expected_auc(p)
        if auc is not None:
            figures["auc"] = auc
        return figures
    if task == "multiclass":
        p = np.asarray(scores, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
            return {}
        predicted = p.argmax(axis=1)
        top = p[np.arange(len(p)), predicted]
        f1 = []
        for k in range(p.shape[1]):
            chosen = predicted == k
            true_positive = float(p[chosen, k].sum())
            false_positive = float((1.0 - p[chosen, k]).sum())
            false_negative = float(p[~chosen, k].sum())
            denominator = 2.0 * true_positive + false_positive + false_negative
            f1.append(2.0 * true_positive / denominator if denominator else 0.0)
        return {"accuracy": float(top.mean()), "macro_f1": float(np.mean(f1))}
    return {}


def expected_auc(p: np.ndarray) -> float | None:
    """AUC of the expected ROC curve of calibrated probabilities `p`; None when every row is
    certain (no expected positives or no expected negatives)."""
    positives = float(p.sum())
    negatives = float(p.size - positives)
    if positives <= 0.0 or negatives <= 0.0:
        return None
    order = np.argsort(-p, kind="mergesort")
    ordered = p[order]
    # Thresholds between distinct scores only: tied rows enter the curve together.
    last_of_block = np.flatnonzero(np.diff(ordered) != 0.0)
    ends = np.concatenate((last_of_block, [ordered.size - 1]))
    tpr = np.concatenate(([0.0], np.cumsum(ordered)[ends] / positives))
    fpr = np.concatenate(([0.0], np.cumsum(1.0 - ordered)[ends] / negatives))
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))
