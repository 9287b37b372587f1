"""The training loop: determinism, best-epoch checkpoints, early stopping, resume, lineage metadata."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from server.contract.manifest import Lineage, TensorSpec
from training.checkpoints import load_checkpoint
from training.config import TrainConfig
from training.datasets import Dataset, DatasetSpec, load_dataset
from training.metrics import evaluate
from training.trainer import TrainingError, TrainResult, train


def test_same_seed_and_data_give_the_same_metrics(tiny_mlp: TrainConfig, tiny_fraud: Dataset, root: Path) -> None:
    first = train(tiny_fraud, tiny_mlp, root)
    second = train(tiny_fraud, tiny_mlp, root)
    assert first.metadata.metrics == second.metadata.metrics
    assert [h.metrics for h in first.history] == [h.metrics for h in second.history]
    other_seed = train(tiny_fraud, replace(tiny_mlp, seed=7), root)
    assert other_seed.metadata.metrics != first.metadata.metrics


def test_checkpoint_holds_the_best_epoch(trained: TrainResult) -> None:
    losses = {h.epoch: h.metrics["log_loss"] for h in trained.history}
    assert trained.metadata.best_epoch == min(losses, key=losses.__getitem__)
    # The held-out rows are the whole (tiny) validation split: the saved weights reproduce the metrics.
    loaded = load_checkpoint(trained.path)
    with torch.no_grad():
        probabilities = loaded.module(torch.from_numpy(loaded.holdout_inputs["features"])).numpy()
    recomputed = evaluate(probabilities, loaded.holdout_labels)
    for key in ("auc", "accuracy", "log_loss"):
        assert recomputed[key] == pytest.approx(trained.metadata.metrics[key], abs=1e-6)


def test_early_stopping_ends_after_patience_epochs_without_improvement(tiny_mlp: TrainConfig, root: Path) -> None:
    rng = np.random.default_rng(0)
    noise = Dataset(
        spec=DatasetSpec(source="demo:fraud", rows=200),
        sha256="0" * 64,
        inputs=rng.normal(size=(200, 6)).astype(np.float32),
        labels=(rng.random(200) < 0.5).astype(np.float32),
        columns=tuple(f"x{i}" for i in range(6)),
        request_features=tuple(f"x{i}" for i in range(6)),
    )
    config = replace(tiny_mlp, architecture_kwargs={"hidden": [64], "dropout": 0.0}, epochs=100, lr=0.05, patience=2)
    result = train(noise, config, root)  # labels are noise: validation loss soon only rises
    assert len(result.history) < 100
    assert result.history[-1].epoch == result.metadata.best_epoch + 2
    best = result.metadata.metrics["log_loss"]
    assert all(h.metrics["log_loss"] >= best for h in result.history)


def test_resume_continues_epochs_and_records_parent(
    tiny_mlp: TrainConfig, tiny_fraud: Dataset, trained: TrainResult
) -> None:
    parent = load_checkpoint(trained.path)
    steps_before = max(int(s["step"]) for s in parent.optimizer_state["state"].values())
    child = train(tiny_fraud, replace(tiny_mlp, epochs=2, patience=5), trained.path.parent.parent, parent=parent)
    meta = child.metadata
    assert meta.parent_version == trained.metadata.version
    assert meta.version == trained.metadata.version + 1
    assert [h.epoch for h in child.history] == [trained.metadata.best_epoch + 1, trained.metadata.best_epoch + 2]
    assert meta.epochs_completed == trained.metadata.best_epoch + 2
    assert meta.preprocessing == trained.metadata.preprocessing
    assert meta.metrics["log_loss"] <= trained.metadata.metrics["log_loss"]
    # The tiny parent is under-trained, so continuing improves it; Adam's step count carries on from the parent.
    assert meta.best_epoch > trained.metadata.best_epoch
    resumed = load_checkpoint(child.path)
    steps_per_epoch = steps_before // trained.metadata.best_epoch
    steps_after = max(int(s["step"]) for s in resumed.optimizer_state["state"].values())
    assert steps_after == steps_before + steps_per_epoch * (meta.best_epoch - trained.metadata.best_epoch)


def test_resume_that_never_beats_the_parent_keeps_its_weights_and_metrics(
    tiny_mlp: TrainConfig, tiny_fraud: Dataset, trained: TrainResult, root: Path
) -> None:
    parent = load_checkpoint(trained.path)
    child = train(tiny_fraud, replace(tiny_mlp, epochs=2, lr=0.0, patience=5), root, parent=parent)
    assert child.metadata.best_epoch == trained.metadata.best_epoch
    assert child.metadata.metrics == trained.metadata.metrics  # train_loss included
    saved = load_checkpoint(child.path).module.state_dict()
    for name, tensor in load_checkpoint(trained.path).module.state_dict().items():
        assert torch.equal(saved[name], tensor), name


def test_resume_refuses_data_with_other_columns(tiny_mlp: TrainConfig, trained: TrainResult, root: Path) -> None:
    other = load_dataset(DatasetSpec(rows=800, seed=1, features=["amount", "hour_of_day"], request_features=None))
    with pytest.raises(TrainingError, match="resumed checkpoint reads columns"):
        train(other, tiny_mlp, root, parent=load_checkpoint(trained.path))


def test_metadata_records_every_lineage_field(tiny_mlp: TrainConfig, tiny_fraud: Dataset, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "train.py").write_text("print('v1')\n")
    subprocess.run([*git, "add", "train.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "v1"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True)

    clean = train(tiny_fraud, tiny_mlp, tmp_path / "ck", source_dir=repo).metadata
    (repo / "train.py").write_text("print('v2')\n")
    dirty = train(tiny_fraud, tiny_mlp, tmp_path / "ck", source_dir=repo).metadata
    outside = train(tiny_fraud, tiny_mlp, tmp_path / "ck", source_dir=tmp_path / "ck").metadata

    assert clean.git_commit == head.stdout.strip() and clean.git_dirty is False
    assert dirty.git_commit == clean.git_commit and dirty.git_dirty is True
    assert outside.git_commit is None and outside.git_dirty is None

    lineage = clean.lineage(tmp_path / "ck" / "tiny" / "1")
    for field in Lineage.model_fields:
        if field not in ("parent_version", "mlflow_run", "retraining"):  # resumed / tracked / retrained only
            assert getattr(lineage, field) not in (None, {}, ""), field
    assert lineage.mlflow_run is None
    assert lineage.checkpoint == str((tmp_path / "ck" / "tiny" / "1").resolve())
    assert set(lineage.metrics) >= {"auc", "accuracy", "log_loss"}
    assert lineage.hyperparameters["batch_size"] == tiny_mlp.batch_size
    assert lineage.dataset_path == "demo:fraud" and lineage.dataset_sha256 == tiny_fraud.sha256
    assert set(lineage.library_versions) == {"torch", "numpy", "python"}
    assert lineage.seed == tiny_mlp.seed
    started, finished = datetime.fromisoformat(clean.started_at), datetime.fromisoformat(clean.finished_at)
    assert started.utcoffset() == timedelta(0) and started <= finished
    assert clean.parent_version is None
    assert clean.architecture_kwargs == {"hidden": [8], "dropout": 0.0}


def test_mlp_signature_and_feature_spec(trained: TrainResult, tiny_fraud: Dataset) -> None:
    meta = trained.metadata
    assert meta.inputs == [TensorSpec(name="features", datatype="FP32", shape=[-1, len(tiny_fraud.columns)])]
    assert meta.outputs == [TensorSpec(name="probability", datatype="FP32", shape=[-1])]
    assert meta.features is not None
    assert meta.features.input == "features"
    assert meta.features.columns == list(tiny_fraud.columns)
    assert meta.features.entity_key == "customer_id"
    assert set(meta.features.store_features) == {c for c in tiny_fraud.columns if c.startswith("cust_")}
    assert meta.features.view is not None and meta.features.view.name == meta.name
    assert [f.name for f in meta.features.view.features] == list(meta.features.store_features)


def test_transformer_trains_on_token_sequences(root: Path) -> None:
    tokens = load_dataset(DatasetSpec(source="demo:sequences", rows=48, seed=0))
    config = TrainConfig(
        name="seq",
        architecture="transformer",
        architecture_kwargs={"d_model": 16, "layers": 1, "heads": 2, "ff_dim": 32},
        epochs=1,
        batch_size=16,
        quiet=True,
    )
    result = train(tokens, config, root)
    loaded = load_checkpoint(result.path)
    assert loaded.metadata.inputs == [TensorSpec(name="tokens", datatype="FP32", shape=[-1, 32, 64])]
    assert loaded.metadata.features is None and loaded.metadata.preprocessing is None
    rows = loaded.holdout_inputs["tokens"]
    assert rows.shape[1:] == (32, 64)
    with torch.no_grad():
        assert loaded.module(torch.from_numpy(rows)).shape == (rows.shape[0],)
    assert loaded.metadata.drift.features == [] and loaded.metadata.drift.prediction is not None


def test_architecture_must_match_the_data(tiny_mlp: TrainConfig, tiny_fraud: Dataset, root: Path) -> None:
    with pytest.raises(TrainingError, match="architecture 'transformer' reads rank-3 inputs"):
        train(tiny_fraud, replace(tiny_mlp, architecture="transformer", architecture_kwargs={}), root)


def test_unknown_architecture_parameter_is_named(tiny_mlp: TrainConfig, tiny_fraud: Dataset, root: Path) -> None:
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['width'\]"):
        train(tiny_fraud, replace(tiny_mlp, architecture_kwargs={"width": 3}), root)


def test_too_few_positive_rows_is_refused(tiny_mlp: TrainConfig, tiny_fraud: Dataset, root: Path) -> None:
    labels = np.zeros_like(tiny_fraud.labels)
    labels[3] = 1.0
    few = replace(tiny_fraud, labels=labels)
    with pytest.raises(TrainingError, match="need at least 2 rows of label 1"):
        train(few, tiny_mlp, root)


def test_run_without_held_out_rows_is_refused(tiny_mlp: TrainConfig, tiny_fraud: Dataset, root: Path) -> None:
    with pytest.raises(TrainingError, match=r"must be positive; got \{'holdout_rows': 0\}"):
        train(tiny_fraud, replace(tiny_mlp, holdout_rows=0), root)
    assert not root.exists()
