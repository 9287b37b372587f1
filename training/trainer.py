"""The training loop: seeded split, fitted preprocessing, early stopping, best epoch -> versioned checkpoint.

One loop for every task and world size: under torchrun each rank trains the same model
(DistributedDataParallel averages the gradients) on its share of each epoch's batches,
validates its share of the validation rows, and the shares are gathered so every rank
computes the same metrics and stops at the same epoch; only rank 0 writes the checkpoint.
"""

from __future__ import annotations

import copy
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from server.contract.manifest import TensorSpec
from training.checkpoints import CHECKPOINT_FORMAT, CheckpointMetadata, LoadedCheckpoint, write_checkpoint
from training.config import TrainConfig
from training.datasets import Dataset
from training.device import Precision
from training.distributed import DistributedError, Placement, gather_rows, inject_fault, shard, sum_across
from training.loader import TrainBatches
from training.metrics import evaluate_task
from training.models import TaskModel, build_model, get_architecture, resolve_kwargs
from training.provenance import git_state, library_versions, utc_now
from training.reference_stats import drift_reference, prediction_reference
from training.splits import split_rows
from training.tabular_transform import TabularTransform
from training.tasks import SELECTION_METRIC, body_outputs, output_specs

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
    """What rank 0 (or the only process) ends with: the version it wrote."""

    path: Path
    metadata: CheckpointMetadata
    history: list[EpochResult]


@dataclass(frozen=True)
class RankResult:
    """What every other rank ends with: the epochs it ran (rank 0 wrote the checkpoint)."""

    rank: int
    best_epoch: int
    history: list[EpochResult]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so the same seed and data give the same run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_cpu(value: Any) -> Any:
    """`value` with every tensor inside (dicts, lists) copied to CPU memory, for a portable checkpoint."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


class Trainer:
    """One training run; `run()` writes the best epoch as a new checkpoint version (on rank 0)."""

    def __init__(
        self,
        dataset: Dataset,
        config: TrainConfig,
        checkpoints_root: Path,
        parent: LoadedCheckpoint | None = None,
        source_dir: Path | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.root = checkpoints_root
        self.parent = parent
        self.source_dir = source_dir or Path.cwd()
        self.placement = placement or Placement()
        self.precision = Precision(self.placement.device, self.placement.amp)
        self.spec = get_architecture(config.architecture)
        if dataset.inputs.ndim != self.spec.input_rank:
            raise TrainingError(
                f"architecture {config.architecture!r} reads rank-{self.spec.input_rank} inputs; "
                f"dataset {dataset.spec.source} has rows of shape {list(dataset.inputs.shape[1:])}"
            )
        counts = {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "patience": config.patience,
            "holdout_rows": config.holdout_rows,
        }
        bad = {name: value for name, value in counts.items() if value < 1}
        if bad:
            # holdout_rows too: a checkpoint without held-out rows cannot be parity-checked or exported.
            raise TrainingError(f"{', '.join(counts)} must be positive; got {bad}")
        if parent is not None:
            meta = parent.metadata
            if (meta.task, meta.classes) != (dataset.task, dataset.classes):
                raise TrainingError(
                    f"resumed checkpoint is a {meta.task} model (classes {meta.classes}); "
                    f"the dataset is {dataset.task} (classes {dataset.classes})"
                )

    def _transform(self, train_rows: np.ndarray) -> TabularTransform | None:
        if not self.spec.tabular:
            return None
        if self.parent is not None:
            transform = self.parent.metadata.preprocessing
            if transform is None or transform.columns != list(self.dataset.columns):
                have = None if transform is None else transform.columns
                raise TrainingError(
                    f"resumed checkpoint reads columns {have}, dataset has {list(self.dataset.columns)}"
                )
            return transform
        return TabularTransform.fit(train_rows, self.dataset.columns, self.dataset.categorical)

    def _model(self, transform: TabularTransform | None, train_targets: np.ndarray) -> TaskModel:
        if self.parent is not None:
            module = self.parent.module
            if not isinstance(module, TaskModel):
                raise TrainingError(f"checkpoint module is a {type(module).__name__}, not a TaskModel")
            return module
        row_shape = tuple(self.dataset.inputs.shape[1:])
        target = (float(train_targets.mean()), float(train_targets.std()) or 1.0)
        return build_model(
            self.config.architecture,
            row_shape,
            self.config.architecture_kwargs,
            transform,
            self.dataset.task,
            self.dataset.classes,
            target,
        )

    def _scores(self, model: TaskModel, inputs: torch.Tensor, raw: bool) -> np.ndarray:
        """The task's scores in chunks: through the whole module (`raw`) or the body over preprocessed rows."""
        width = body_outputs(self.dataset.task, self.dataset.classes)
        outputs = [np.zeros((0,) if width == 1 else (0, width), np.float32)]  # a rank's share may be empty
        with torch.no_grad():
            for start in range(0, inputs.shape[0], EVAL_CHUNK_ROWS):
                chunk = inputs[start : start + EVAL_CHUNK_ROWS].to(self.placement.device)
                logits = model.logits(chunk) if raw else model.body(chunk)
                outputs.append(model.scores(logits).float().cpu().numpy())
        return np.concatenate(outputs)

    def _validate(self, model: TaskModel, inputs: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
        """Metrics on the whole validation split: each rank scores its share, every rank gets all scores."""
        local = self._scores(model, inputs[shard(self.placement, inputs.shape[0])], raw=False)
        return evaluate_task(self.dataset.task, gather_rows(self.placement, local), labels)

    def _fit_epoch(
        self,
        model: TaskModel,
        body: torch.nn.Module,
        batches: TrainBatches,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> float:
        """One pass over this rank's batches; the mean training loss over every rank's rows."""
        model.train()
        device = self.placement.device
        total, rows = 0.0, 0
        for inputs, targets in batches:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with self.precision.autocast():
                loss = model.loss(body(inputs), targets)
            torch.autograd.backward(scaler.scale(loss))
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * targets.shape[0]
            rows += targets.shape[0]
        total, seen = sum_across(self.placement, [total, float(rows)])
        return total / seen

    def run(self) -> TrainResult | RankResult:
        config, placement = self.config, self.placement
        task = self.dataset.task
        selection = SELECTION_METRIC[task]
        started_at = utc_now()
        seed_everything(config.seed)
        kwargs = resolve_kwargs(config.architecture, config.architecture_kwargs)
        raw = self.dataset.inputs
        labels = self.dataset.labels
        try:
            train_idx, val_idx = split_rows(task, labels, config.val_fraction, config.seed, self.dataset.classes)
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc
        transform = self._transform(raw[train_idx])
        model = self._model(transform, labels[train_idx]).to(placement.device)

        def body_inputs(rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(transform.apply(rows) if transform is not None else rows)

        batches = TrainBatches(
            body_inputs(raw[train_idx]), torch.from_numpy(labels[train_idx]), config.batch_size, config.seed, placement
        )
        x_val, y_val = body_inputs(raw[val_idx]), labels[val_idx]
        body: torch.nn.Module = model.body
        if placement.distributed:
            device_ids = [placement.device.index] if placement.device.type == "cuda" else None
            body = DistributedDataParallel(model.body, device_ids=device_ids)

        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scaler = self.precision.scaler()
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
            best_metrics = {**self.parent.metadata.metrics, **self._validate(model, x_val, y_val)}
            best_loss, best_epoch = best_metrics[selection], self.parent.metadata.best_epoch
            best_state = copy.deepcopy(model.state_dict())
            best_optimizer = copy.deepcopy(optimizer.state_dict())

        history: list[EpochResult] = []
        stale = 0
        last_epoch = first_epoch + config.epochs - 1
        progress = tqdm(
            range(first_epoch, last_epoch + 1),
            desc=f"train {config.name}",
            unit="epoch",
            disable=config.quiet or not placement.is_main or not sys.stderr.isatty(),
        )
        for epoch in progress:
            inject_fault(placement, epoch)
            batches.set_epoch(epoch)
            try:
                train_loss = self._fit_epoch(model, body, batches, optimizer, scaler)
                model.eval()
                metrics = self._validate(model, x_val, y_val)
            except RuntimeError as exc:
                if not placement.distributed or isinstance(exc, DistributedError):
                    raise
                raise DistributedError(
                    f"rank {placement.rank} of {placement.world_size}: epoch {epoch} failed "
                    f"(a lost rank shows up here as a failed collective): {exc}"
                ) from exc
            result = EpochResult(epoch, train_loss, metrics)
            history.append(result)
            progress.set_postfix(train_loss=f"{result.train_loss:.4f}", **{selection: f"{metrics[selection]:.4f}"})
            if metrics[selection] < best_loss:
                best_loss, best_epoch, stale = metrics[selection], epoch, 0
                best_metrics = {**metrics, "train_loss": result.train_loss}
                best_state = copy.deepcopy(model.state_dict())
                best_optimizer = copy.deepcopy(optimizer.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    break
        progress.close()
        if not placement.is_main:
            return RankResult(placement.rank, best_epoch, history)

        model.load_state_dict(best_state)
        model.eval()
        # Reference statistics come from raw rows through the whole module: what serving will see.
        train_scores = self._scores(model, torch.from_numpy(raw[train_idx]), raw=True)
        drift = drift_reference(
            raw[train_idx],
            self.dataset.columns,
            prediction_reference(task, train_scores, self.dataset.classes),
            categorical=self.dataset.categorical,
        )
        holdout = val_idx[: config.holdout_rows]
        input_spec = TensorSpec(name=self.spec.input_name, datatype="FP32", shape=[-1, *raw.shape[1:]])
        payload = {
            "format": CHECKPOINT_FORMAT,
            "state_dict": _to_cpu(best_state),
            "optimizer_state": _to_cpu(best_optimizer),
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
                task=task,
                classes=self.dataset.classes,
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
                world_size=placement.world_size,
                backend=placement.backend,
                device=placement.device.type,
                amp=placement.amp,
                inputs=[input_spec],
                outputs=output_specs(task, self.dataset.classes),
                features=self.dataset.feature_spec(self.spec.input_name, config.name),
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
    placement: Placement | None = None,
) -> TrainResult | RankResult:
    """Train `config` on `dataset` (continuing `parent` if given) and write a new checkpoint version.

    A single process (the default placement) always gets a TrainResult; under torchrun, rank 0
    does and every other rank gets a RankResult.
    """
    return Trainer(dataset, config, checkpoints_root, parent, source_dir, placement).run()
