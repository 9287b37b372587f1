"""Live quality: training's metric definitions, the label-free estimate, and the figures of pairs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from server.quality.contract import QualityContracts
from server.quality.estimate import estimate, expected_auc
from server.quality.live import figures_of, measure
from server.quality.metrics import evaluate, evaluate_multiclass, row_losses
from server.quality.pairs import Pair
from training.metrics import evaluate as training_evaluate

sys.path.insert(0, str(Path(__file__).parent))
from labels_models import write_manifest  # noqa: E402


@pytest.fixture
def contracts(tmp_path: Path) -> QualityContracts:
    write_manifest(tmp_path, "b", 1, "binary")
    write_manifest(tmp_path, "k", 1, "multiclass")
    write_manifest(tmp_path, "r", 1, "regression")
    return QualityContracts(tmp_path)


def test_training_imports_the_same_metric_definitions() -> None:
    assert training_evaluate is evaluate


def test_live_binary_figures_equal_training_evaluate_at_the_same_threshold(contracts: QualityContracts) -> None:
    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(np.float64)
    contract = contracts.get("b", 1)
    assert contract is not None
    live = measure(contract, p, y)
    trained = evaluate(p, y)
    assert live["auc"] == trained["auc"]
    assert live["log_loss"] == trained["log_loss"]
    assert live["accuracy"] == float(np.mean((p >= 0.4) == y.astype(bool)))  # the model's threshold 0.4
    assert live["predicted_positive_rate"] == pytest.approx(p.mean())
    assert live["observed_positive_rate"] == pytest.approx(y.mean())


def test_one_class_of_labels_gives_no_auc_but_the_other_figures(contracts: QualityContracts) -> None:
    contract = contracts.get("b", 1)
    assert contract is not None
    figures = measure(contract, np.array([0.2, 0.9]), np.array([1.0, 1.0]))
    assert "auc" not in figures and figures["accuracy"] == 0.5


def test_multiclass_and_regression_figures(contracts: QualityContracts) -> None:
    rng = np.random.default_rng(4)
    p = rng.dirichlet([1, 1, 1], size=200)
    y = rng.integers(0, 3, 200).astype(np.float64)
    k = contracts.get("k", 1)
    r = contracts.get("r", 1)
    assert k is not None and r is not None
    assert measure(k, p, y) == evaluate_multiclass(p, y)
    figures = measure(r, np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 1.0]))  # constant targets: no R², no error
    assert figures == {"rmse": pytest.approx(np.sqrt(10 / 3)), "mae": pytest.approx(4 / 3)}


def test_row_losses_average_to_log_loss_and_squared_error() -> None:
    p = np.array([0.1, 0.8, 0.5])
    y = np.array([0.0, 1.0, 1.0])
    assert row_losses("binary", p, y).mean() == pytest.approx(evaluate(p, y)["log_loss"])
    assert row_losses("regression", np.array([1.0, 3.0]), np.array([2.0, 1.0])).tolist() == [1.0, 4.0]


def test_expected_auc_matches_the_brute_force_expectation_of_calibrated_scores() -> None:
    # E[AUC] of labels drawn from p is not exactly the curve's AUC, but both are close for many rows.
    rng = np.random.default_rng(5)
    p = rng.beta(2, 5, 4000)
    realised = [evaluate(p, (rng.random(p.size) < p).astype(float))["auc"] for _ in range(30)]
    estimated = expected_auc(p)
    assert estimated is not None
    assert abs(estimated - float(np.mean(realised))) < 0.01


def test_estimated_accuracy_is_the_expected_share_of_right_decisions() -> None:
    p = np.array([0.9, 0.2, 0.6])
    assert estimate("binary", p, threshold=0.5)["accuracy"] == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    certain = estimate("binary", np.array([1.0, 1.0]))
    assert "auc" not in certain  # no expected negatives: no curve


def test_estimated_multiclass_accuracy_is_the_mean_top_probability() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    figures = estimate("multiclass", p)
    assert figures["accuracy"] == pytest.approx(0.65)
    assert 0.0 < figures["macro_f1"] < 1.0
    assert estimate("regression", np.array([1.0])) == {}


def test_figures_keep_only_rows_served_in_the_interval_and_report_the_estimate_error(
    contracts: QualityContracts,
) -> None:
    contract = contracts.get("b", 1)
    assert contract is not None
    pairs = [Pair(f"r{i}", 0, 1, 100.0 + i, float(i % 2), [0.3 + 0.4 * (i % 2)]) for i in range(10)]
    figures = figures_of(contract, pairs, 100.0, 105.0)
    assert figures.labels == 5
    assert figures.metrics["auc"] == 1.0
    assert figures.estimate_error["accuracy"] == pytest.approx(0.7 - 1.0)  # estimate 0.7, measured 1.0
