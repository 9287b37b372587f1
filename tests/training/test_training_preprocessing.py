"""Preprocessing inside the module equals the training pipeline's numpy transform, on raw rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoints import load_checkpoint
from training.models import ProbabilityModel
from training.tabular_layer import TabularPreprocessor
from training.tabular_transform import TabularTransform
from training.trainer import TrainResult

COLUMNS = ["amount", "category", "flag"]


@pytest.fixture
def fitted() -> tuple[TabularTransform, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = np.stack([rng.lognormal(3.0, 1.0, 500), rng.integers(0, 4, 500), rng.integers(0, 2, 500)], axis=1).astype(
        np.float32
    )
    return TabularTransform.fit(raw, COLUMNS, categorical=["category"]), raw


def test_fit_standardises_clipped_numeric_columns(fitted: tuple[TabularTransform, np.ndarray]) -> None:
    transform, raw = fitted
    out = transform.apply(raw)
    assert out.shape == (500, 2 + 4)
    np.testing.assert_allclose(out[:, :2].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out[:, :2].std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_array_equal(out[:, 2:].sum(axis=1), 1.0)  # exactly one category per row
    assert transform.categorical[0].categories == [0.0, 1.0, 2.0, 3.0]


def test_layer_matches_numpy_transform_including_outliers_and_unseen_categories(
    fitted: tuple[TabularTransform, np.ndarray],
) -> None:
    transform, raw = fitted
    odd = np.array([[1e9, 9.0, 1.0], [-5.0, 2.0, 0.0], [0.0, -1.0, 7.0]], dtype=np.float32)
    rows = np.concatenate([raw[:50], odd])
    with torch.no_grad():
        torch_out = TabularPreprocessor(transform)(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(torch_out, transform.apply(rows), rtol=0, atol=1e-6)
    assert torch_out[50, 0] == pytest.approx(
        (transform.numeric[0].upper - transform.numeric[0].mean) / transform.numeric[0].std, rel=1e-5
    )
    np.testing.assert_array_equal(torch_out[50, 2:], 0.0)  # category 9 was never seen


def test_trained_module_on_raw_rows_equals_training_pipeline(trained: TrainResult) -> None:
    loaded = load_checkpoint(trained.path)
    module = loaded.module
    assert isinstance(module, ProbabilityModel)
    transform = loaded.metadata.preprocessing
    assert transform is not None
    raw = loaded.holdout_inputs["features"]
    with torch.no_grad():
        served = module(torch.from_numpy(raw)).numpy()
        pipeline = torch.sigmoid(module.body(torch.from_numpy(transform.apply(raw)))).numpy()
    np.testing.assert_allclose(served, pipeline, rtol=0, atol=1e-6)


def test_fit_refuses_unknown_categorical_column(fitted: tuple[TabularTransform, np.ndarray]) -> None:
    _, raw = fitted
    with pytest.raises(ValueError, match=r"categorical columns \['colour'\]"):
        TabularTransform.fit(raw, COLUMNS, categorical=["colour"])
