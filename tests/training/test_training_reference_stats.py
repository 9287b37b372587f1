"""Reference statistics for drift monitoring are well-formed histograms of the training data."""

from __future__ import annotations

import numpy as np
import pytest

from training.reference_stats import histogram, prediction_histogram
from training.trainer import TrainResult


def test_checkpoint_reference_covers_every_column_and_the_predictions(trained: TrainResult) -> None:
    drift = trained.metadata.drift
    assert [h.name for h in drift.features] == trained.metadata.features.columns
    assert drift.prediction is not None and drift.prediction.name == "probability"
    assert drift.sample_size > 0
    for hist in [*drift.features, drift.prediction]:
        assert sum(hist.proportions) == pytest.approx(1.0, abs=1e-9), hist.name
        assert all(p >= 0 for p in hist.proportions)
        assert np.all(np.diff(hist.bin_edges) > 0), hist.name
        assert len(hist.bin_edges) == len(hist.proportions) + 1
    assert drift.prediction.bin_edges[0] == 0.0 and drift.prediction.bin_edges[-1] == 1.0


def test_few_distinct_values_get_one_bin_each() -> None:
    hist = histogram("is_online", np.array([0, 1, 1, 1, 0, 1, 1, 1], dtype=np.float32))
    assert hist.bin_edges == [-0.5, 0.5, 1.5]
    assert hist.proportions == [0.25, 0.75]
    constant = histogram("c", np.full(5, 3.0))
    assert constant.bin_edges == [2.5, 3.5] and constant.proportions == [1.0]


def test_continuous_values_get_quantile_bins_of_equal_share() -> None:
    values = np.random.default_rng(0).normal(size=10_000)
    hist = histogram("amount", values, bins=10)
    assert len(hist.proportions) == 10
    np.testing.assert_allclose(hist.proportions, 0.1, atol=0.002)


def test_values_outside_the_edges_count_in_the_end_bins() -> None:
    hist = histogram("x", np.array([-100.0, 0.0, 1.0, 100.0]), edges=np.array([0.0, 0.5, 1.0]))
    assert hist.proportions == [0.5, 0.5]


def test_prediction_histogram_spans_zero_to_one() -> None:
    hist = prediction_histogram(np.random.default_rng(0).beta(0.5, 10, size=1000))
    assert hist.bin_edges[0] == 0.0 and hist.bin_edges[-1] == 1.0
    assert sum(hist.proportions) == pytest.approx(1.0)
