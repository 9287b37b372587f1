"""The training loop: seeded split, fitted preprocessing, early stopping, best epoch -> versioned checkpoint."""

from __future__ import annotations

import copy
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from server.registry.manifest import TensorSpec
from training.checkpoints import CHECKPOINT_FORMAT, CheckpointMetadata, LoadedCheckpoint, write_checkpoint
from training.config import TrainConfig
from training.datasets import Dataset
from training.metrics import evaluate
from training.models import ProbabilityModel, build_model, get_architecture, resolve_kwargs
from training.provenance import git_state, library_versions, utc_now
from training.reference_stats import drift_reference
from training.tabular_transform import TabularTransform

OUTPUT = TensorSpec(name="probability", datatype="FP32", shape=[-1])
EVAL_CHUNK_ROWS = 1024


class TrainingError(ValueError):
    """Training cannot start with this data and configuration (the message says why)."""


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    path: Path
    metadata: CheckpointMetadata
    history: list[EpochResult]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so the same seed and data give the same run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices with each class represented in both, sorted."""
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for value in (0.0, 1.0):
        rows = np.flatnonzero(labels == value)
        if rows.size < 2:
            raise TrainingError(
                f"need at least 2 rows of label {int(value)} to split train/validation; "
                f"got {rows.size} of {labels.size} (use more rows)"
            )
        rows = rng.permutation(rows)
        n_val = min(rows.size - 1, max(1, round(rows.size * val_fraction)))
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _probabilities(model: ProbabilityModel, inputs: torch.Tensor, raw: bool) -> np.ndarray:
    """Probabilities in chunks: through the whole module (`raw`) or the body over preprocessed rows."""
    outputs = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], EVAL_CHUNK_ROWS):
            chunk = inputs[start : start + EVAL_CHUNK_ROWS]
            outputs.append(model(chunk) if raw else torch.sigmoid(model.body(chunk)))
    return torch.cat(outputs).numpy()


class Trainer:
    """One training run; `run()` writes the best epoch as a new checkpoint version."""

    def __init__(
        self,
        dataset: Dataset,
        config: TrainConfig,
        checkpoints_root: Path,
        parent: LoadedCheckpoint | None = None,
        source_dir: Path | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.root = checkpoints_root
        self.parent = parent
        self.source_dir = source_dir or Path.cwd()
        self.spec = get_architecture(config.architecture)
        if dataset.inputs.ndim != self.spec.input_rank:
            raise TrainingError(
                f"architecture {config.architecture!r} reads rank-{self.spec.input_rank} inputs; "
                f"dataset {dataset.spec.source} has rows of shape {list(dataset.inputs.shape[1:])}"
            )
        counts = {"epochs": config.epochs, "batch_size": config.batch_size, "patience": config.patience,
                  "holdout_rows": config.holdout_rows}
        bad = {name: value for name, value in counts.items() if value < 1}
        if bad:
            # holdout_rows too: a checkpoint without held-out rows cannot be parity-checked or exported.
            raise TrainingError(f"{', '.join(counts)} must be positive; got {bad}")

    def _transform(self, train_rows: np.ndarray) -> TabularTransform | None:
        if not self.spec.tabular:
            return None
        if self.parent is not None:
            transform = self.parent.metadata.preprocessing
            if transform is None or transform.columns != list(self.dataset.columns):
                have = None if transform is None else transform.columns
                raise TrainingError(f"resumed checkpoint reads columns {have}, dataset has {list(self.dataset.columns)}")
            return transform
        return TabularTransform.fit(train_rows, self.dataset.columns, self.dataset.categorical)

    def _model(self, transform: TabularTransform | None) -> ProbabilityModel:
        if self.parent is not None:
            module = self.parent.module
            if not isinstance(module, ProbabilityModel):
                raise TrainingError(f"checkpoint module is a {type(module).__name__}, not a ProbabilityModel")
            return module
        row_shape = tuple(self.dataset.inputs.shape[1:])
        return build_model(self.config.architecture, row_shape, self.config.architecture_kwargs, transform)

    def run(self) -> TrainResult:
        config = self.config
        started_at = utc_now()
        seed_everything(config.seed)
        kwargs = resolve_kwargs(config.architecture, config.architecture_kwargs)
        raw = self.dataset.inputs
        labels = self.dataset.labels
        train_idx, val_idx = stratified_split(labels, config.val_fraction, config.seed)
        transform = self._transform(raw[train_idx])
        model = self._model(transform)

        def body_inputs(rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(transform.apply(rows) if transform is not None else rows)

        x_train, y_train = body_inputs(raw[train_idx]), torch.from_numpy(labels[train_idx])
        x_val, y_val = body_inputs(raw[val_idx]), labels[val_idx]

        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        first_epoch = 1
        best_metrics: dict[str, float] = {}
        best_loss = float("inf")
        best_epoch = 0
        best_state: dict[str, Any] = {}
        best_optimizer: dict[str, Any] = {}
        if self.parent is not None:
            optimizer.load_state_dict(self.parent.optimizer_state)
            for group in optimizer.param_groups:
                group["lr"], group["weight_decay"] = config.lr, config.weight_decay
            first_epoch = self.parent.metadata.best_epoch + 1
            # The parent's weights are the baseline: a resumed run never saves anything worse.
            # Should they stay best, so do the parent's metrics (train_loss included).
            model.eval()
            best_metrics = {
                **self.parent.metadata.metrics,
                **evaluate(_probabilities(model, x_val, raw=False), y_val),
            }
            best_loss, best_epoch = best_metrics["log_loss"], self.parent.metadata.best_epoch
            best_state = copy.deepcopy(model.state_dict())
            best_optimizer = copy.deepcopy(optimizer.state_dict())

        loss_fn = nn.BCEWithLogitsLoss()
        history: list[EpochResult] = []
        stale = 0
        last_epoch = first_epoch + config.epochs - 1
        progress = tqdm(
            range(first_epoch, last_epoch + 1),
            desc=f"train {config.name}",
            unit="epoch",
            disable=config.quiet or not sys.stderr.isatty(),
        )
        for epoch in progress:
            model.train()
            order = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            total = 0.0
            for start in range(0, order.numel(), config.batch_size):
                batch = order[start : start + config.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model.body(x_train[batch]), y_train[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * batch.numel()
            model.eval()
            metrics = evaluate(_probabilities(model, x_val, raw=False), y_val)
            result = EpochResult(epoch, total / order.numel(), metrics)
            history.append(result)
            progress.set_postfix(train_loss=f"{result.train_loss:.4f}", val_loss=f"{metrics['log_loss']:.4f}",
                                 auc=f"{metrics['auc']:.3f}")
            if metrics["log_loss"] < best_loss:
                best_loss, best_epoch, stale = metrics["log_loss"], epoch, 0
                best_metrics = {**metrics, "train_loss": result.train_loss}
                best_state = copy.deepcopy(model.state_dict())
                best_optimizer = copy.deepcopy(optimizer.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    break
        progress.close()

        model.load_state_dict(best_state)
        model.eval()
        # Reference statistics come from raw rows through the whole module: what serving will see.
        train_probabilities = _probabilities(model, torch.from_numpy(raw[train_idx]), raw=True)
        drift = drift_reference(raw[train_idx], self.dataset.columns, train_probabilities,
                                OUTPUT.name, categorical=self.dataset.categorical)
        holdout = val_idx[: config.holdout_rows]
        input_spec = TensorSpec(name=self.spec.input_name, datatype="FP32", shape=[-1, *raw.shape[1:]])
        payload = {
            "format": CHECKPOINT_FORMAT,
            "state_dict": best_state,
            "optimizer_state": best_optimizer,
            "holdout_inputs": {self.spec.input_name: torch.from_numpy(raw[holdout].copy())},
            "holdout_labels": torch.from_numpy(labels[holdout].copy()),
        }
        commit, dirty = git_state(self.source_dir)
        versions = library_versions()
        finished_at = utc_now()
        parent_version = self.parent.metadata.version if self.parent is not None else None

        def describe(version: int) -> CheckpointMetadata:
            return CheckpointMetadata(
                name=config.name,
                version=version,
                architecture=config.architecture,
                architecture_kwargs=kwargs,
                hyperparameters=config.hyperparameters(),
                metrics=best_metrics,
                best_epoch=best_epoch,
                epochs_completed=history[-1].epoch,
                dataset=self.dataset.spec,
                dataset_path=self.dataset.path,
                dataset_sha256=self.dataset.sha256,
                dataset_rows=int(raw.shape[0]),
                git_commit=commit,
                git_dirty=dirty,
                library_versions=versions,
                seed=config.seed,
                started_at=started_at,
                finished_at=finished_at,
                parent_version=parent_version,
                inputs=[input_spec],
                outputs=[OUTPUT],
                features=self.dataset.feature_spec(self.spec.input_name),
                preprocessing=transform,
                drift=drift,
            )

        path = write_checkpoint(self.root, config.name, payload, describe)
        return TrainResult(path=path, metadata=describe(int(path.name)), history=history)


def train(
    dataset: Dataset,
    config: TrainConfig,
    checkpoints_root: Path,
    parent: LoadedCheckpoint | None = None,
    source_dir: Path | None = None,
) -> TrainResult:
    """Train `config` on `dataset` (continuing `parent` if given) and write a new checkpoint version."""
    return Trainer(dataset, config, checkpoints_root, parent, source_dir).run()
