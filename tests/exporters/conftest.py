"""Tiny trained checkpoints (fraud mlp, sequence transformer) and their exports, shared per session.

Real training, real torch export and real onnxruntime throughout; the models are sized so
the whole exporters suite stays fast on two cores. Session fixtures are read-only: tests
that write export into their own `tmp_path` repositories.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from exporters.export.options import ExportOptions
from exporters.export.pipeline import ExportResult, export_checkpoint
from training.config import TrainConfig
from training.datasets import DatasetSpec, load_dataset
from training.trainer import train

TINY_MLP = TrainConfig(
    name="fraud",
    architecture="mlp",
    architecture_kwargs={"hidden": [16], "dropout": 0.0},
    epochs=2,
    batch_size=128,
    lr=0.01,
    holdout_rows=256,
    quiet=True,
)
TINY_TRANSFORMER = TrainConfig(
    name="sequences",
    architecture="transformer",
    architecture_kwargs={"d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64, "dropout": 0.0},
    epochs=1,
    batch_size=64,
    holdout_rows=128,
    quiet=True,
)


@pytest.fixture(scope="session")
def checkpoints_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def mlp_checkpoint(checkpoints_root: Path) -> Path:
    """`<root>/fraud/1`: an mlp over 1,500 demo transactions (raw features, baked-in preprocessing)."""
    dataset = load_dataset(DatasetSpec(source="demo:fraud", rows=1500, seed=3))
    return train(dataset, TINY_MLP, checkpoints_root).path


@pytest.fixture(scope="session")
def transformer_checkpoint(checkpoints_root: Path) -> Path:
    """`<root>/sequences/1`: a one-block transformer over 400 demo sequences `[N, 32, 64]`."""
    dataset = load_dataset(DatasetSpec(source="demo:sequences", rows=400, seed=3))
    return train(dataset, TINY_TRANSFORMER, checkpoints_root).path


@pytest.fixture(scope="session")
def exported_mlp(mlp_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The mlp checkpoint exported with default options (fp32, optimised)."""
    return export_checkpoint(mlp_checkpoint, tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def exported_transformer(transformer_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The transformer checkpoint exported with default options (fp32, optimised)."""
    return export_checkpoint(transformer_checkpoint, tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def exported_mlp_int8(mlp_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The mlp checkpoint exported with dynamic int8 quantisation."""
    return export_checkpoint(mlp_checkpoint, tmp_path_factory.mktemp("repository"), ExportOptions(quantize="int8"))


TINY_TASK_MLP = replace(TINY_MLP, epochs=3, batch_size=64, lr=0.02, holdout_rows=200)
"""Multiclass and regression: a little more training than the fraud mlp, for meaningful metric changes."""


@pytest.fixture(scope="session")
def multiclass_checkpoint(checkpoints_root: Path) -> Path:
    """`<root>/segments/1`: an mlp over 1,000 demo customers in four text-named segments."""
    dataset = load_dataset(DatasetSpec(source="demo:segments", rows=1000, seed=3))
    return train(dataset, replace(TINY_TASK_MLP, name="segments"), checkpoints_root).path


@pytest.fixture(scope="session")
def regression_checkpoint(checkpoints_root: Path) -> Path:
    """`<root>/delivery/1`: an mlp over 1,000 demo deliveries predicting minutes."""
    dataset = load_dataset(DatasetSpec(source="demo:delivery", rows=1000, seed=3))
    return train(dataset, replace(TINY_TASK_MLP, name="delivery"), checkpoints_root).path


@pytest.fixture(scope="session")
def tasks_repository(
    multiclass_checkpoint: Path, regression_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One repository holding both checkpoints exported with default options (fp32, optimised)."""
    repository = tmp_path_factory.mktemp("tasks_repository")
    for checkpoint in (multiclass_checkpoint, regression_checkpoint):
        export_checkpoint(checkpoint, repository)
    return repository
