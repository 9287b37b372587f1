"""Versioned checkpoints `<root>/<model>/<version>/`: written by the trainer, read by exporters and `--resume`.

A version folder holds `checkpoint.pt` (weights, optimizer state, held-out rows) and
`metadata.json` (`CheckpointMetadata`: lineage, signature, feature spec, drift reference).
Folders appear whole: they are staged under a hidden name in the model folder and renamed
into place, and the rename is the claim on the version number, so concurrent writers never
share or overwrite a version.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.contract.manifest import DriftReference, FeatureSpec, Lineage, MlflowRunRef, RetrainingLineage, TensorSpec
from training.datasets import DatasetSpec
from training.models import TaskModel, build_model
from training.tabular_transform import TabularTransform
from training.tasks import ClassNames, Task

CHECKPOINT_FILENAME = "checkpoint.pt"
METADATA_FILENAME = "metadata.json"
HIGH_WATER_FILENAME = ".highest_version"
STAGING_PREFIX = ".staging-"
CHECKPOINT_FORMAT = 1
METADATA_SCHEMA_VERSION = 1
MAX_CLAIM_ATTEMPTS = 100


class CheckpointError(Exception):
    """A checkpoint that cannot be read or written: names the path and what is wrong with it."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"checkpoint {path}: {problem}")
        self.path = path
        self.problem = problem


class CheckpointMetadata(BaseModel):
    """`metadata.json`: everything known about one trained version besides its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = METADATA_SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1)
    architecture: str
    architecture_kwargs: dict[str, Any] = Field(default_factory=dict)
    task: Task = "binary"
    classes: ClassNames | None = None
    """Multiclass: the class names (or whole numbers) in the order of the `probabilities` columns."""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    """Validation metrics of the saved (best) epoch (`training.metrics`: auc/accuracy/log_loss,
    accuracy/macro_f1/log_loss or rmse/mae/r2) and its train_loss (the loss trained on:
    cross-entropy, or for regression the mean squared error of standardised targets)."""
    best_epoch: int = Field(ge=1)
    epochs_completed: int = Field(ge=1)
    """Number of the last epoch run. A resumed run continues from its parent's best epoch
    (the weights it saved), so epochs the parent ran after that one are not counted."""
    dataset: DatasetSpec
    """How to load the training data again (used by `--resume`)."""
    dataset_path: str
    dataset_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dataset_rows: int = Field(ge=1)
    git_commit: str | None
    git_dirty: bool | None
    library_versions: dict[str, str]
    seed: int
    started_at: str
    finished_at: str
    parent_version: int | None = None
    world_size: int = Field(default=1, ge=1)
    """Processes that trained it together (torchrun ranks)."""
    backend: str | None = None
    """torch.distributed backend of a multi-process run (gloo, nccl); None for one process."""
    device: str = "cpu"
    amp: str | None = None
    """Mixed precision used in training (bf16, fp16); None for float32."""
    mlflow_run: MlflowRunRef | None = None
    """The MLflow run that tracked this training (`training/tracking.py`); None: not tracked."""
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    features: FeatureSpec | None = None
    preprocessing: TabularTransform | None = None
    """Fitted tabular transform; its values are also buffers of the module."""
    drift: DriftReference
    retraining: RetrainingLineage | None = None
    """Set by `hotserve retrain`: the capture window, rows and labels trained on, and the champion."""

    def lineage(self, checkpoint_dir: Path) -> Lineage:
        """This version's lineage for `model.json`, pointing at `checkpoint_dir`."""
        # Lineage allows extra fields: the version's identity and run shape travel with it.
        return Lineage.model_validate(
            {
                "architecture": self.architecture,
                "checkpoint": str(checkpoint_dir.resolve()),
                "hyperparameters": self.hyperparameters,
                "metrics": self.metrics,
                "dataset_path": self.dataset_path,
                "dataset_sha256": self.dataset_sha256,
                "git_commit": self.git_commit,
                "git_dirty": self.git_dirty,
                "library_versions": self.library_versions,
                "seed": self.seed,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "parent_version": self.parent_version,
                "mlflow_run": self.mlflow_run,
                "retraining": self.retraining,
                "name": self.name,
                "version": self.version,
                "architecture_kwargs": self.architecture_kwargs,
                "task": self.task,
                "classes": self.classes,
                "world_size": self.world_size,
                "backend": self.backend,
                "device": self.device,
                "amp": self.amp,
                "best_epoch": self.best_epoch,
                "epochs_completed": self.epochs_completed,
                "dataset_rows": self.dataset_rows,
            }
        )


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to export or evaluate."""

    path: Path
    metadata: CheckpointMetadata
    module: torch.nn.Module
    """Eval mode; raw inputs in, the task's outputs out (`training.models.TaskModel`)."""
    holdout_inputs: dict[str, np.ndarray]
    """Held-out validation rows keyed by input name (raw values, float32)."""
    holdout_labels: np.ndarray
    """Their labels: 0/1, class indices or target values, by task."""
    optimizer_state: dict[str, Any]
    """Optimizer state of the saved epoch, for `--resume`."""


def _fsync_write(path: Path, write: Callable[[Any], None]) -> None:
    with path.open("wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def _version_of(entry: Path) -> int | None:
    name = entry.name
    return int(name) if name.isdigit() and int(name) > 0 and entry.is_dir() else None


def existing_versions(model_dir: Path) -> list[int]:
    """Version numbers with a folder under `model_dir`, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(v for v in (_version_of(e) for e in model_dir.iterdir()) if v is not None)


def _high_water(model_dir: Path) -> int:
    try:
        return int((model_dir / HIGH_WATER_FILENAME).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _raise_high_water(model_dir: Path, version: int) -> None:
    """Remember the highest version claimed, so deleting the newest folder never frees its number."""
    if _high_water(model_dir) >= version:
        return
    temp = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}.hw"
    temp.write_text(f"{version}\n")
    os.replace(temp, model_dir / HIGH_WATER_FILENAME)


def next_version(model_dir: Path) -> int:
    """The next number never used in `model_dir`: above every folder and the recorded high-water mark."""
    return max([0, _high_water(model_dir), *existing_versions(model_dir)]) + 1


def write_checkpoint(
    root: Path,
    name: str,
    payload: dict[str, Any],
    describe: Callable[[int], CheckpointMetadata],
) -> Path:
    """Write `<root>/<name>/<version>/` with the next free version and return its path.

    `payload` goes to `checkpoint.pt` once; `describe(version)` builds the metadata for
    the version being claimed (again if another writer claimed that number first).
    """
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        _fsync_write(staging / CHECKPOINT_FILENAME, lambda fh: torch.save(payload, fh))
        for _ in range(MAX_CLAIM_ATTEMPTS):
            version = next_version(model_dir)
            metadata = describe(version)
            if metadata.version != version or metadata.name != name:
                raise ValueError(f"metadata names {metadata.name!r} v{metadata.version}, expected {name!r} v{version}")
            text = (metadata.model_dump_json(indent=2) + "\n").encode()
            _fsync_write(staging / METADATA_FILENAME, lambda fh: fh.write(text))
            target = model_dir / str(version)
            try:
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # another writer claimed this number first; take the next one
                raise
            _raise_high_water(model_dir, version)
            return target
        raise CheckpointError(model_dir, f"could not claim a version in {MAX_CLAIM_ATTEMPTS} attempts")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_metadata(path: Path) -> CheckpointMetadata:
    """Parse `<path>/metadata.json`; raises CheckpointError for a missing folder or file, or bad content."""
    if not path.is_dir():
        raise CheckpointError(path, "folder not found")
    file = path / METADATA_FILENAME
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, f"{METADATA_FILENAME} not found") from None
    try:
        return CheckpointMetadata.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
        raise CheckpointError(path, f"bad {METADATA_FILENAME}: {problems}") from exc


def record_retraining(path: Path, retraining: RetrainingLineage) -> CheckpointMetadata:
    """Add `retraining` to a written version's metadata (`hotserve retrain` knows the holdout
    comparison only after training); the file is replaced whole, never left half written."""
    metadata = read_metadata(path).model_copy(update={"retraining": retraining})
    text = (CheckpointMetadata.model_validate(metadata.model_dump()).model_dump_json(indent=2) + "\n").encode()
    temp = path / f"{STAGING_PREFIX}{uuid.uuid4().hex}.json"
    try:
        _fsync_write(temp, lambda fh: fh.write(text))
        os.replace(temp, path / METADATA_FILENAME)
    finally:
        temp.unlink(missing_ok=True)
    return metadata


def _read_payload(path: Path) -> dict[str, Any]:
    file = path / CHECKPOINT_FILENAME
    if not file.is_file():
        raise CheckpointError(path, f"{CHECKPOINT_FILENAME} not found")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(path, f"corrupt {CHECKPOINT_FILENAME}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            path, f"{CHECKPOINT_FILENAME} is not a format-{CHECKPOINT_FORMAT} checkpoint (found {found!r})"
        )
    missing = [k for k in ("state_dict", "optimizer_state", "holdout_inputs", "holdout_labels") if k not in payload]
    if missing:
        raise CheckpointError(path, f"{CHECKPOINT_FILENAME} lacks {missing}")
    return payload


def build_module(metadata: CheckpointMetadata) -> TaskModel:
    """An untrained module with the architecture, input shape, preprocessing and task `metadata` records."""
    row_shape = tuple(metadata.inputs[0].shape[1:])
    return build_model(
        metadata.architecture,
        row_shape,
        metadata.architecture_kwargs,
        metadata.preprocessing,
        metadata.task,
        metadata.classes,
    )


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Load a version folder: metadata, the module in eval mode and the held-out rows."""
    path = Path(path)
    metadata = read_metadata(path)
    payload = _read_payload(path)
    try:
        module = build_module(metadata)
        module.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(path, f"weights do not fit architecture {metadata.architecture!r}: {exc}") from exc
    module.eval()
    holdout_inputs = {k: v.numpy() for k, v in payload["holdout_inputs"].items()}
    expected = {spec.name for spec in metadata.inputs}
    if set(holdout_inputs) != expected:
        raise CheckpointError(path, f"held-out rows are keyed {sorted(holdout_inputs)}, inputs are {sorted(expected)}")
    return LoadedCheckpoint(
        path=path,
        metadata=metadata,
        module=module,
        holdout_inputs=holdout_inputs,
        holdout_labels=payload["holdout_labels"].numpy(),
        optimizer_state=payload["optimizer_state"],
    )


def latest_checkpoint(root: Path, name: str) -> Path | None:
    """The highest complete version folder of `name` under `root`, or None when there is none."""
    model_dir = Path(root) / name
    for version in reversed(existing_versions(model_dir)):
        candidate = model_dir / str(version)
        if (candidate / METADATA_FILENAME).is_file():
            return candidate
    return None
