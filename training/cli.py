"""`hotserve train`: parse options, train, write a checkpoint version (torch is imported only in `run`).

Also the entry point of each torchrun rank (`python -m training`); `--nproc N` starts torchrun
with N of them (`training/launch.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demos import DEMO_PREFIX
from training.config import TrainConfig
from training.options import DEFAULTS, add_arguments

__all__ = ["add_arguments", "run"]

DEMO_FOR_RANK = {2: "demo:fraud", 3: "demo:sequences"}
"""The demo `--dataset` defaults to, by the architecture's input rank (tabular rows, token sequences)."""

if TYPE_CHECKING:  # the trainer imports torch
    from training.datasets import DatasetSpec
    from training.distributed import Placement
    from training.trainer import RankResult, TrainResult


def _architecture_overrides(args: argparse.Namespace, architecture: str) -> dict[str, Any]:
    overrides = dict(args.model_arg)
    if args.hidden is not None:
        if architecture == "transformer":
            if len(args.hidden) != 1:
                raise ValueError(f"--hidden for the transformer is one value (d_model), got {args.hidden}")
            overrides["d_model"] = args.hidden[0]
        else:
            overrides["hidden"] = args.hidden
    return overrides


def _report(result: TrainResult | RankResult, rank_prefix: str) -> None:
    from training.trainer import RankResult

    if isinstance(result, RankResult):
        print(
            f"{rank_prefix}stopped after epoch {result.history[-1].epoch} (best epoch {result.best_epoch}); "
            "rank 0 writes the checkpoint"
        )
        return
    meta = result.metadata
    print(
        f"wrote {result.path} (model {meta.name} version {meta.version}, {meta.task}, best epoch {meta.best_epoch} "
        f"of {meta.epochs_completed})"
    )
    if meta.world_size > 1:
        print(f"trained by {meta.world_size} processes ({meta.backend}, {meta.device})")
    print(" ".join(f"{key}={value:.4f}" for key, value in meta.metrics.items()))


def _error(line: str) -> None:
    """Say why training stopped; a torchrun rank also leaves the line for `hotserve train --nproc`."""
    from training.launch import record_rank_error

    print(line, file=sys.stderr)
    record_rank_error(line)


def run(args: argparse.Namespace) -> int:
    from training.launch import launch, launched_by_torchrun

    if args.nproc is not None:
        if args.nproc < 1:
            print(f"hotserve train: error: --nproc must be at least 1, got {args.nproc}", file=sys.stderr)
            return 2
        if launched_by_torchrun():
            print("hotserve train: error: --nproc starts torchrun itself; under torchrun leave it out", file=sys.stderr)
            return 2
        if args.nproc > 1:
            return launch(args.nproc, args)

    from training import distributed
    from training.checkpoints import CheckpointError, load_checkpoint
    from training.datasets import DatasetError, DatasetSpec, load_dataset
    from training.models import get_architecture
    from training.tracking import MlflowRun, TrackingError, TrackingRequest, start_run
    from training.trainer import TrainingError, TrainResult, train

    placement: distributed.Placement | None = None
    tracking: MlflowRun | None = None
    prefix = ""
    try:
        placement = distributed.start(args.device, args.amp, args.dist_timeout_s)
        prefix = f"rank {placement.rank} of {placement.world_size}: " if placement.distributed else ""
        parent = load_checkpoint(args.resume) if args.resume is not None else None
        inherited: dict[str, Any] = dict(DEFAULTS)
        if parent is not None:
            meta = parent.metadata
            if args.arch is not None and args.arch != meta.architecture:
                raise ValueError(f"--arch {args.arch} differs from the resumed checkpoint's {meta.architecture}")
            inherited.update({k: v for k, v in meta.hyperparameters.items() if k in DEFAULTS})
            inherited["seed"] = meta.seed
        architecture = args.arch or (parent.metadata.architecture if parent else "mlp")
        arch_spec = get_architecture(architecture)
        overrides = _architecture_overrides(args, architecture)
        if parent is not None:
            if overrides:
                raise ValueError("a resumed run keeps the parent's architecture; drop --hidden/--model-arg")
            overrides = parent.metadata.architecture_kwargs
        settings = {k: getattr(args, k) if getattr(args, k) is not None else inherited[k] for k in DEFAULTS}

        if args.dataset is None and parent is not None:
            spec = parent.metadata.dataset
        else:
            spec = DatasetSpec(
                source=args.dataset or DEMO_FOR_RANK[arch_spec.input_rank],
                rows=args.rows,
                seed=settings["seed"],
                features=args.features,
                label=args.label,
                entity_key=args.entity_key,
                request_features=args.request_features,
                categorical=args.categorical,
                task=args.task,
            )
        name = args.name or (
            parent.metadata.name
            if parent
            else spec.source.removeprefix(DEMO_PREFIX)
            if spec.is_demo
            else Path(spec.source).stem
        )
        dataset = load_dataset(spec)
        if placement.is_main:
            if dataset.task_note:
                print(f"note: {dataset.task_note} (--task sets it)")
            for note in placement.notes:
                print(f"note: {note}")
        config = TrainConfig(
            name=name,
            architecture=architecture,
            architecture_kwargs=overrides,
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            lr=settings["lr"],
            patience=settings["patience"],
            seed=settings["seed"],
            quiet=args.quiet,
        )
        if placement.is_main:
            request = TrackingRequest.from_env(args.mlflow_experiment, args.mlflow_required)
            tracking = start_run(request, name, _tracked_params(config, spec, placement))
        try:
            result = train(dataset, config, args.checkpoints, parent=parent, placement=placement, tracking=tracking)
        except BaseException:
            if tracking is not None:
                tracking.end("FAILED")
            raise
    except TrackingError as exc:
        _error(f"hotserve train: error: not tracked ({exc}); --mlflow-required stops here, before training")
        return 2
    except (CheckpointError, DatasetError, TrainingError, ValueError) as exc:
        _error(f"hotserve train: error: {prefix}{exc}")
        return 2
    except distributed.DistributedError as exc:
        _error(f"hotserve train: error: {exc}; no checkpoint was written")
        return 1
    finally:
        if placement is not None:
            distributed.stop(placement)

    if tracking is not None and isinstance(result, TrainResult):
        tracking.finish(result.path, result.metadata)
        if tracking.failed is not None:
            print(f"warning: MLflow run {tracking.ref.run_id} is incomplete: {tracking.failed}", file=sys.stderr)
    _report(result, prefix)
    return 0


def _tracked_params(config: TrainConfig, spec: DatasetSpec, placement: Placement) -> dict[str, Any]:
    """What MLflow shows as the run's parameters: the hyperparameters, the model and the data."""
    return {
        **config.hyperparameters(),
        "architecture": config.architecture,
        "architecture_kwargs": config.architecture_kwargs,
        "seed": config.seed,
        "dataset": spec.source,
        **{f"dataset_{k}": v for k, v in spec.model_dump(exclude={"source"}, exclude_none=True).items()},
        "world_size": placement.world_size,
        "device": placement.device.type,
    }
