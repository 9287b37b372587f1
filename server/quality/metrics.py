"""Quality metrics per task (numpy only), defined once: training's validation, exporters'
metric-change checks and the server's live quality (`server/quality/`) all compute these, so a
live figure and its training figure compare.

binary: auc, accuracy, log_loss. multiclass: accuracy, macro_f1, log_loss. regression: rmse, mae, r2.
`training.metrics` re-exports them (training imports the server's contract, never the reverse).
"""

from __future__ import annotations

import numpy as np

from server.contract.manifest import Task

EPS = 1e-7
"""Probabilities are clipped to [EPS, 1 - EPS] before a logarithm."""
_EPS = EPS


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties get average ranks)."""
    scores = np.asarray(probabilities, dtype=np.float64).ravel()
    truth = np.asarray(labels).ravel().astype(bool)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUC needs both classes; got {positives} positive and {negatives} negative labels")
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


def _check_rows(scores: np.ndarray, labels: np.ndarray) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"predictions have {len(scores)} rows but labels have {len(labels)}")
    if len(labels) == 0:
        raise ValueError("cannot evaluate zero rows")


def evaluate_multiclass(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`accuracy`, `macro_f1` (unweighted mean of per-class F1) and `log_loss` of `[N, K]`
    probabilities against class indices `[N]`."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).ravel().astype(np.int64)
    if p.ndim != 2:
        raise ValueError(f"multiclass probabilities must be [N, K], got shape {list(p.shape)}")
    _check_rows(p, y)
    classes = p.shape[1]
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"class indices must lie in [0, {classes}), got {int(y.min())}..{int(y.max())}")
    predicted = p.argmax(axis=1)
    f1 = []
    for k in range(classes):
        true_positive = float(np.sum((predicted == k) & (y == k)))
        wrong = float(np.sum(predicted == k) + np.sum(y == k)) - 2.0 * true_positive
        f1.append(2.0 * true_positive / (2.0 * true_positive + wrong) if true_positive or wrong else 0.0)
    picked = np.clip(p[np.arange(len(y)), y], _EPS, 1.0)
    return {
        "accuracy": float(np.mean(predicted == y)),
        "macro_f1": float(np.mean(f1)),
        "log_loss": float(-np.mean(np.log(picked))),
    }


def evaluate_regression(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """`rmse`, `mae` and `r2` (1 - residual / total sum of squares) of predictions against targets."""
    p = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    _check_rows(p, y)
    residual = y - p
    errors = regression_errors(p, y)
    total = float(np.sum((y - y.mean()) ** 2))
    if total == 0.0:
        raise ValueError(f"R² needs targets that vary; all {y.size} are {y[0]!r}")
    return {**errors, "r2": 1.0 - float(np.sum(residual**2)) / total}


def regression_errors(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """`rmse` and `mae` of predictions against targets (defined for any targets, constant ones too)."""
    p = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    _check_rows(p, y)
    residual = y - p
    return {"rmse": float(np.sqrt(np.mean(residual**2))), "mae": float(np.mean(np.abs(residual)))}


def row_losses(task: Task, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's loss by the task's selection metric: binary and multiclass cross-entropy (the
    terms whose mean is `log_loss`), regression squared error (whose mean is RMSE squared)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    if task == "regression":
        return (np.asarray(scores, dtype=np.float64).ravel() - y) ** 2
    if task == "multiclass":
        p = np.asarray(scores, dtype=np.float64)
        return -np.log(np.clip(p[np.arange(len(y)), y.astype(np.int64)], _EPS, 1.0))
    p = np.clip(np.asarray(scores, dtype=np.float64).ravel(), _EPS, 1.0 - _EPS)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def evaluate_task(task: Task, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics of its score output (probability, probabilities or prediction)."""
    if task == "multiclass":
        return evaluate_multiclass(scores, labels)
    if task == "regression":
        return evaluate_regression(scores, labels)
    return evaluate(scores, labels)
