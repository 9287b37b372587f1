"""Validation metrics against brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import evaluate


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 60) / 4.0  # many ties
    labels = (rng.random(60) < 0.4).astype(np.float32)
    assert evaluate(scores, labels)["auc"] == pytest.approx(_pairwise_auc(scores, labels), abs=1e-12)


def test_perfect_and_reversed_rankings() -> None:
    labels = np.array([0, 0, 1, 1])
    assert evaluate(np.array([0.1, 0.2, 0.8, 0.9]), labels)["auc"] == 1.0
    assert evaluate(np.array([0.9, 0.8, 0.2, 0.1]), labels)["auc"] == 0.0


def test_accuracy_and_log_loss() -> None:
    probabilities = np.array([0.9, 0.4, 0.2, 0.6])
    labels = np.array([1, 1, 0, 0])
    result = evaluate(probabilities, labels)
    assert result["accuracy"] == 0.5
    expected = -(math.log(0.9) + math.log(0.4) + math.log(0.8) + math.log(0.4)) / 4
    assert result["log_loss"] == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(evaluate(np.array([0.0, 1.0]), np.array([1, 0]))["log_loss"])


def test_single_class_and_mismatched_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="AUC needs both classes; got 0 positive and 3 negative"):
        evaluate(np.array([0.1, 0.2, 0.3]), np.zeros(3))
    with pytest.raises(ValueError, match="3 rows but labels have 2"):
        evaluate(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
