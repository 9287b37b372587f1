"""Validation metrics per task: defined in `server/quality/metrics.py` (the server's live quality
computes the same ones) and re-exported here for training and exporters."""

from __future__ import annotations

from server.quality.metrics import (
    accuracy,
    evaluate,
    evaluate_multiclass,
    evaluate_regression,
    evaluate_task,
    log_loss,
    roc_auc,
)

__all__ = [
    "accuracy",
    "evaluate",
    "evaluate_multiclass",
    "evaluate_regression",
    "evaluate_task",
    "log_loss",
    "roc_auc",
]
