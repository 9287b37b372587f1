"""Tiny datasets and trained checkpoints shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainConfig
from training.datasets import Dataset, DatasetSpec, load_dataset
from training.trainer import TrainResult, train

TINY_MLP = TrainConfig(
    name="tiny",
    architecture_kwargs={"hidden": [8], "dropout": 0.0},
    epochs=3,
    batch_size=64,
    lr=0.01,
    quiet=True,
)


@pytest.fixture(scope="session")
def tiny_mlp() -> TrainConfig:
    """A small, fast mlp configuration."""
    return TINY_MLP


@pytest.fixture(scope="session")
def tiny_fraud() -> Dataset:
    """800 demo transactions (about 30 frauds)."""
    return load_dataset(DatasetSpec(source="demo:fraud", rows=800, seed=1))


@pytest.fixture(scope="session")
def trained(tiny_fraud: Dataset, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One tiny mlp checkpoint, trained once per session (read-only for tests)."""
    return train(tiny_fraud, TINY_MLP, tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints"
