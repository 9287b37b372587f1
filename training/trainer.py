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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from server.contract.manifest import TensorSpec
from server.contract.provenance import utc_timestamp
from training.checkpoints import CHECKPOINT_FORMAT, CheckpointMetadata, LoadedCheckpoint, write_checkpoint
from training.config import TrainConfig
from training.datasets import Dataset
from training.device import Precision
from training.distributed import DistributedError, Placement, gather_rows, inject_fault, shard, sum_across
from training.loader import TrainBatches
from training.metrics import evaluate_task
from training.models import TaskModel, build_model, get_architecture, resolve_kwargs
from training.provenance import git_state, library_versions
from training.reference_stats import drift_reference, prediction_reference
from training.splits import split_rows
from training.tabular_transform import TabularTransform
from training.tasks import SELECTION_METRIC, body_outputs, output_specs
from training.tracking import MlflowRun

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


@dataclass
class _Setup:
    """A run's prepared parts: the split, preprocessing, model (and its DDP wrapper), batches, optimizer."""

    architecture_kwargs: dict[str, Any]
    """The architecture's parameters with its defaults filled in, as the checkpoint records them."""
    train_idx: np.ndarray
    val_idx: np.ndarray
    transform: TabularTransform | None
    model: TaskModel
    body: torch.nn.Module
    """`model.body`, wrapped in DistributedDataParallel under torchrun."""
    batches: TrainBatches
    x_val: torch.Tensor
    y_val: np.ndarray
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


@dataclass
class _Best:
    """The best epoch so far: its validation loss, metrics and a copy of the weights and optimizer state."""

    loss: float = float("inf")
    epoch: int = 0
    first_epoch: int = 1
    """The run's first epoch number (a resumed run continues after its parent's best epoch)."""
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] = field(default_factory=dict)

    def keep(
        self, loss: float, epoch: int, metrics: dict[str, float], model: TaskModel, optimizer: torch.optim.Optimizer
    ) -> None:
        self.loss, self.epoch, self.metrics = loss, epoch, metrics
        self.state = copy.deepcopy(model.state_dict())
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())


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
        tracking: MlflowRun | None = None,
    ) -> None:
        self.dataset = dataset
        self.tracking = tracking
        """Where rank 0 logs each epoch; its run id goes into the checkpoint's metadata."""
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
        """Prepare, run the epochs with early stopping, and (rank 0) write the best epoch."""
        started_at = utc_timestamp()
        seed_everything(self.config.seed)
        setup = self._prepare()
        best = self._baseline(setup)
        history = self._epochs(setup, best)
        if not self.placement.is_main:
            return RankResult(self.placement.rank, best.epoch, history)
        return self._write(setup, best, history, started_at)

    def _prepare(self) -> _Setup:
        """Split the rows, fit (or inherit) preprocessing, build the model, its optimizer and batches."""
        config, placement, labels = self.config, self.placement, self.dataset.labels
        architecture_kwargs = resolve_kwargs(config.architecture, config.architecture_kwargs)
        try:
            train_idx, val_idx = split_rows(
                self.dataset.task, labels, config.val_fraction, config.seed, self.dataset.classes
            )
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc
        raw = self.dataset.inputs
        transform = self._transform(raw[train_idx])
        model = self._model(transform, labels[train_idx]).to(placement.device)

        def body_inputs(rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(transform.apply(rows) if transform is not None else rows)

        batches = TrainBatches(
            body_inputs(raw[train_idx]), torch.from_numpy(labels[train_idx]), config.batch_size, config.seed, placement
        )
        body: torch.nn.Module = model.body
        if placement.distributed:
            device_ids = [placement.device.index] if placement.device.type == "cuda" else None
            body = DistributedDataParallel(model.body, device_ids=device_ids)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return _Setup(
            architecture_kwargs=architecture_kwargs,
            train_idx=train_idx,
            val_idx=val_idx,
            transform=transform,
            model=model,
            body=body,
            batches=batches,
            x_val=body_inputs(raw[val_idx]),
            y_val=labels[val_idx],
            optimizer=optimizer,
            scaler=self.precision.scaler(),
        )

    def _baseline(self, setup: _Setup) -> _Best:
        """What an epoch must beat: nothing for a new model; a resumed run's parent, so it never
        saves anything worse (should the parent stay best, so do its metrics, train_loss included)."""
        if self.parent is None:
            return _Best()
        config, optimizer, model = self.config, setup.optimizer, setup.model
        optimizer.load_state_dict(self.parent.optimizer_state)
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = config.lr, config.weight_decay
        model.eval()
        metrics = {**self.parent.metadata.metrics, **self._validate(model, setup.x_val, setup.y_val)}
        best = _Best(epoch=self.parent.metadata.best_epoch, first_epoch=self.parent.metadata.best_epoch + 1)
        best.keep(metrics[SELECTION_METRIC[self.dataset.task]], best.epoch, metrics, model, optimizer)
        return best

    def _epochs(self, setup: _Setup, best: _Best) -> list[EpochResult]:
        """Train epoch after epoch until `config.epochs` ran or `patience` epochs brought no better
        validation loss; `best` follows the best epoch. Every rank runs the same epochs."""
        config, placement = self.config, self.placement
        selection = SELECTION_METRIC[self.dataset.task]
        history: list[EpochResult] = []
        stale = 0
        progress = tqdm(
            range(best.first_epoch, best.first_epoch + config.epochs),
            desc=f"train {config.name}",
            unit="epoch",
            disable=config.quiet or not placement.is_main or not sys.stderr.isatty(),
        )
        for epoch in progress:
            result = self._epoch(setup, epoch)
            history.append(result)
            if self.tracking is not None and placement.is_main:
                self.tracking.log_epoch(epoch, result.train_loss, result.metrics)
            metric = result.metrics[selection]
            progress.set_postfix(train_loss=f"{result.train_loss:.4f}", **{selection: f"{metric:.4f}"})
            if metric < best.loss:
                best.keep(
                    metric, epoch, {**result.metrics, "train_loss": result.train_loss}, setup.model, setup.optimizer
                )
                stale = 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
        progress.close()
        return history

    def _epoch(self, setup: _Setup, epoch: int) -> EpochResult:
        """One epoch's training pass and validation; a failed collective names this rank."""
        placement = self.placement
        inject_fault(placement, epoch)
        setup.batches.set_epoch(epoch)
        try:
            train_loss = self._fit_epoch(setup.model, setup.body, setup.batches, setup.optimizer, setup.scaler)
            setup.model.eval()
            metrics = self._validate(setup.model, setup.x_val, setup.y_val)
        except RuntimeError as exc:
            if not placement.distributed or isinstance(exc, DistributedError):
                raise
            raise DistributedError(
                f"rank {placement.rank} of {placement.world_size}: epoch {epoch} failed "
                f"(a lost rank shows up here as a failed collective): {exc}"
            ) from exc
        return EpochResult(epoch, train_loss, metrics)

    def _write(self, setup: _Setup, best: _Best, history: list[EpochResult], started_at: str) -> TrainResult:
        """Rank 0: the best epoch's weights, held-out rows, drift reference and lineage as a new version."""
        config, placement, task = self.config, self.placement, self.dataset.task
        raw, labels, model = self.dataset.inputs, self.dataset.labels, setup.model
        model.load_state_dict(best.state)
        model.eval()
        # Reference statistics come from raw rows through the whole module: what serving will see.
        train_scores = self._scores(model, torch.from_numpy(raw[setup.train_idx]), raw=True)
        drift = drift_reference(
            raw[setup.train_idx],
            self.dataset.columns,
            prediction_reference(task, train_scores, self.dataset.classes),
            categorical=self.dataset.categorical,
        )
        holdout = setup.val_idx[: config.holdout_rows]
        input_spec = TensorSpec(name=self.spec.input_name, datatype="FP32", shape=[-1, *raw.shape[1:]])
        payload = {
            "format": CHECKPOINT_FORMAT,
            "state_dict": _to_cpu(best.state),
            "optimizer_state": _to_cpu(best.optimizer_state),
            "holdout_inputs": {self.spec.input_name: torch.from_numpy(raw[holdout].copy())},
            "holdout_labels": torch.from_numpy(labels[holdout].copy()),
        }
        commit, dirty = git_state(self.source_dir)
        versions = library_versions()
        finished_at = utc_timestamp()
        parent_version = self.parent.metadata.version if self.parent is not None else None

        def describe(version: int) -> CheckpointMetadata:
            return CheckpointMetadata(
                name=config.name,
                version=version,
                architecture=config.architecture,
                architecture_kwargs=setup.architecture_kwargs,
                task=task,
                classes=self.dataset.classes,
                hyperparameters=config.hyperparameters(),
                metrics=best.metrics,
                best_epoch=best.epoch,
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
                preprocessing=setup.transform,
                drift=drift,
                mlflow_run=self.tracking.ref if self.tracking is not None else None,
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
    tracking: MlflowRun | None = None,
) -> TrainResult | RankResult:
    """Train `config` on `dataset` (continuing `parent` if given) and write a new checkpoint version.

    A single process (the default placement) always gets a TrainResult; under torchrun, rank 0
    does and every other rank gets a RankResult.
    """
    return Trainer(dataset, config, checkpoints_root, parent, source_dir, placement, tracking).run()
