"""Challenger against champion on the held-out rows: better only with confidence."""

from __future__ import annotations

import numpy as np
import pytest

from training.retrain.compare import compare


def scored(rng: np.random.Generator, signal: np.ndarray, noise: float) -> np.ndarray:
    """Probabilities that see `signal` through noise of this size."""
    return 1.0 / (1.0 + np.exp(-(signal + rng.normal(0.0, noise, signal.shape))))


def labels_and_signal(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    signal = rng.normal(0.0, 1.5, rows)
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(signal - 2.0)))).astype(np.float64)
    return labels, signal


def test_the_same_model_is_not_better() -> None:
    rng = np.random.default_rng(0)
    labels, signal = labels_and_signal(rng, 600)
    scores = scored(rng, signal, 1.0)
    result = compare("binary", scores, scores.copy(), labels)
    assert result.improvement == 0.0 and not result.better


def test_a_clearly_better_model_is_better_on_the_tasks_metric() -> None:
    rng = np.random.default_rng(1)
    labels, signal = labels_and_signal(rng, 1000)
    result = compare("binary", scored(rng, signal, 3.0), scored(rng, signal, 0.3), labels)
    assert result.metric == "auc" and result.better
    assert result.challenger["auc"] > result.champion["auc"] and result.lower_bound > 0
    assert "better" in result.summary()


def test_a_model_no_better_passes_about_one_time_in_twenty_at_the_default_confidence() -> None:
    """False alarms: two models of the same quality (the same noise on the signal), many draws."""
    rng = np.random.default_rng(2)
    trials, passed = 150, 0
    for _ in range(trials):
        labels, signal = labels_and_signal(rng, 400)
        result = compare("binary", scored(rng, signal, 1.0), scored(rng, signal, 1.0), labels, resamples=200)
        passed += result.better
    # 5% expected; 12% is more than 3.5 standard deviations of a 150-draw binomial above it
    assert passed / trials <= 0.12


def test_lower_is_better_metrics_are_signed_so_that_positive_is_an_improvement() -> None:
    rng = np.random.default_rng(3)
    targets = rng.normal(0.0, 1.0, 500)
    worse, better = targets + rng.normal(0.0, 1.0, 500), targets + rng.normal(0.0, 0.2, 500)
    result = compare("regression", worse, better, targets)
    assert result.metric == "rmse" and result.improvement > 0 and result.better
    reverse = compare("regression", better, worse, targets)
    assert reverse.improvement < 0 and not reverse.better


def test_a_min_improvement_must_be_cleared_by_the_bound() -> None:
    rng = np.random.default_rng(4)
    labels, signal = labels_and_signal(rng, 1000)
    champion, challenger = scored(rng, signal, 1.2), scored(rng, signal, 1.0)
    loose = compare("binary", champion, challenger, labels, min_improvement=-1.0)
    strict = compare("binary", champion, challenger, labels, min_improvement=0.5)
    assert loose.better and not strict.better


def test_a_metric_of_another_task_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of a binary model's"):
        compare("binary", np.zeros(4), np.zeros(4), np.array([0, 1, 0, 1.0]), metric="rmse")


def test_held_out_rows_of_one_class_are_refused() -> None:
    scores = np.linspace(0, 1, 200)
    with pytest.raises(ValueError, match="AUC needs both classes"):
        compare("binary", scores, scores, np.zeros(200), resamples=100)
