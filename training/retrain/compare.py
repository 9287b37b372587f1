"""Challenger against champion on the same held-out rows: is the challenger better, with confidence?

Both models score the same newest rows; the difference of the task's metric (the definitions
of `training/metrics.py`, which live quality shares) is bootstrapped over those rows, paired
(each resample draws the same rows for both), and the challenger is better only when the lower
confidence bound of its improvement is above `min_improvement`. A challenger no better than the
champion passes about `1 - confidence` of the time (tests/training/test_retrain_compare.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.metrics import evaluate_task
from training.tasks import Task

DEFAULT_METRIC: dict[Task, str] = {"binary": "auc", "multiclass": "macro_f1", "regression": "rmse"}
"""What decides by default: the figure live quality shows first for the task."""
HIGHER_IS_BETTER = {
    "auc": True,
    "accuracy": True,
    "macro_f1": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("auc", "accuracy", "log_loss"),
    "multiclass": ("accuracy", "macro_f1", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    metric: str
    champion: dict[str, float]
    challenger: dict[str, float]
    improvement: float
    """Challenger minus champion on the metric, signed so that positive is better."""
    lower_bound: float
    """One-sided lower confidence bound of the improvement (paired bootstrap)."""
    min_improvement: float
    confidence: float
    rows: int

    @property
    def better(self) -> bool:
        return self.lower_bound > self.min_improvement

    def summary(self) -> str:
        verdict = "better" if self.better else "not better"
        return (
            f"{self.metric}: challenger {self.challenger[self.metric]:.4f}, champion {self.champion[self.metric]:.4f} "
            f"on {self.rows} held-out rows; improvement {self.improvement:+.4f}, {self.confidence:.0%} lower bound "
            f"{self.lower_bound:+.4f} (needs > {self.min_improvement:+.4f}): {verdict}"
        )


def compare(
    task: Task,
    champion: np.ndarray,
    challenger: np.ndarray,
    targets: np.ndarray,
    metric: str | None = None,
    min_improvement: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compare two models' scores (`evaluate_task`'s inputs) on the same rows' `targets`."""
    metric = metric or DEFAULT_METRIC[task]
    if metric not in TASK_METRICS[task]:
        raise ValueError(f"metric {metric!r} is not one of a {task} model's: {', '.join(TASK_METRICS[task])}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if resamples < 100:
        raise ValueError(f"at least 100 bootstrap resamples, got {resamples}")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    base = evaluate_task(task, champion, targets)
    new = evaluate_task(task, challenger, targets)
    rng = np.random.default_rng(seed)
    n = len(targets)
    differences = np.empty(resamples)
    drawn = attempts = 0
    while drawn < resamples:
        attempts += 1
        if attempts > 10 * resamples:
            raise ValueError(f"{n} held-out rows are too few to bootstrap {metric}: most resamples lack a class")
        rows = rng.integers(0, n, size=n)
        try:
            a = evaluate_task(task, champion[rows], targets[rows])[metric]
            b = evaluate_task(task, challenger[rows], targets[rows])[metric]
        except ValueError:  # a resample without both classes (AUC) or with constant targets (r2)
            continue
        differences[drawn] = sign * (b - a)
        drawn += 1
    return Comparison(
        metric=metric,
        champion=base,
        challenger=new,
        improvement=sign * (new[metric] - base[metric]),
        lower_bound=float(np.quantile(differences, 1.0 - confidence)),
        min_improvement=min_improvement,
        confidence=confidence,
        rows=n,
    )
