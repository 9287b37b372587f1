"""One retrain, start to verdict: champion -> table -> train -> compare -> export -> release.

Exit codes (`hotserve retrain`): those of `hotserve release` when a release ran (0 promoted,
1 rolled back, 2 inconclusive, 3 the server refused to start it); 4 the challenger was not
better than the champion on the held-out rows (nothing exported); 5 too few labelled rows
(refused before training, with the counts); 6 any other failure (the message says what).
"""

from __future__ import annotations

import argparse
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from server import release_cli
from server.admin_client import AdminClient, AdminError
from server.contract.manifest import RetrainingLineage, sha256_file
from training.checkpoints import LoadedCheckpoint, load_checkpoint, record_retraining
from training.config import TrainConfig
from training.datasets import Dataset, DatasetSpec
from training.retrain.champion import Champion, find_champion, production_version
from training.retrain.compare import Comparison, compare
from training.retrain.sink import open_sink
from training.retrain.table import TableSpec, TrainingTable, Window, build_table
from training.trainer import TrainResult, train

NOT_BETTER = 4
TOO_FEW_ROWS = 5
FAILED = 6
SCORE_CHUNK_ROWS = 4096
TABLES_DIR = "retrain-tables"
"""Under `<checkpoints>/<model>/`: the training tables, one Parquet file per retrain."""


@dataclass(frozen=True)
class RetrainRequest:
    model: str
    sink: str
    window: Window
    repository: Path
    checkpoints: Path
    holdout: float = 0.2
    fresh: bool = False
    epochs: int | None = None
    metric: str | None = None
    min_improvement: float = 0.0
    confidence: float = 0.95
    min_rows: int = 1000
    min_class_rows: int = 20
    champion: int | None = None
    """The version to start from and beat; None: the server's production version."""
    release: bool = True
    policy: Path | None = None
    url: str = ""
    poll_s: float = 1.0
    timeout_s: float = 60.0


class Refused(Exception):
    """Retraining stops before training; `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def scores(checkpoint: LoadedCheckpoint, rows: np.ndarray) -> np.ndarray:
    """The module's task scores (what `training/metrics.py` reads) of raw rows."""
    module = checkpoint.module
    module.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, rows.shape[0], SCORE_CHUNK_ROWS):
            chunk = torch.from_numpy(np.ascontiguousarray(rows[start : start + SCORE_CHUNK_ROWS]))
            parts.append(module.scores(module.logits(chunk)).float().numpy())  # type: ignore[operator]
    return np.concatenate(parts)


def _class_names(spec: TableSpec) -> list[str]:
    if spec.task == "binary":
        return ["label 0", "label 1"]
    return [f"class {c!r}" for c in spec.classes or []]


def check_rows(
    table: TrainingTable, spec: TableSpec, train_idx: np.ndarray, holdout_idx: np.ndarray, request: RetrainRequest
) -> None:
    """Refuse (TOO_FEW_ROWS) a table too thin to train on or to judge the challenger with."""
    counts = table.counts
    facts = (
        f"{counts.captured_rows} rows captured in the window, {counts.labels_read} labels read, "
        f"{counts.labelled_rows} labelled rows usable"
    )
    if counts.left_out:
        facts += " (left out: " + ", ".join(f"{n} {why}" for why, n in counts.left_out.items()) + ")"
    if counts.labelled_rows < request.min_rows:
        raise Refused(f"too few labelled rows: {facts}; at least {request.min_rows} needed", TOO_FEW_ROWS)
    if spec.task == "regression":
        return
    short = []
    for k, name in enumerate(_class_names(spec)):
        for part, index in (("training", train_idx), ("holdout", holdout_idx)):
            n = int(np.sum(table.targets[index] == k))
            if n < request.min_class_rows:
                short.append(f"{n} of {name} in the {part} rows")
    if short:
        raise Refused(
            f"too few labelled rows per class: {', '.join(short)}; at least {request.min_class_rows} each "
            f"needed ({facts})",
            TOO_FEW_ROWS,
        )


def training_dataset(table: TrainingTable, rows: np.ndarray, path: Path, champion: LoadedCheckpoint) -> Dataset:
    """The table's training rows as a `Dataset` served like the champion (its feature spec)."""
    meta = champion.metadata
    features = meta.features
    assert features is not None  # TableSpec required feature columns
    stored = {f.name: f.datatype for f in features.view.features} if features.view is not None else {}
    categorical = (
        [c.name for c in meta.preprocessing.categorical]
        if meta.preprocessing is not None
        else list(meta.dataset.categorical or [])
    )
    spec = DatasetSpec(
        source=str(path), features=list(features.columns), label="label", task=meta.task, categorical=categorical
    )
    return Dataset(
        spec=spec,
        sha256=sha256_file(path),
        inputs=table.features[rows],
        labels=table.targets[rows],
        task=meta.task,
        classes=meta.classes,
        columns=tuple(features.columns),
        categorical=tuple(categorical),
        request_features=tuple(features.request_features),
        store_features=tuple(features.store_features),
        entity_key=features.entity_key,
        entity_key_type=features.view.entity_key_type if features.view is not None else "STRING",
        column_datatypes=tuple(stored.get(c, "FP32") for c in features.columns),
    )


def config_of(champion: LoadedCheckpoint, epochs: int | None) -> TrainConfig:
    """The champion's architecture, seed and hyperparameters (`--epochs` may set the epochs)."""
    meta = champion.metadata
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    hyper = {k: v for k, v in meta.hyperparameters.items() if k in known}
    if epochs is not None:
        hyper["epochs"] = epochs
    return TrainConfig(
        name=meta.name,
        architecture=meta.architecture,
        architecture_kwargs=meta.architecture_kwargs,
        seed=meta.seed,
        quiet=True,
        **hyper,
    )


def _iso(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="s", timezone="UTC"))


def retrain(
    request: RetrainRequest,
    client: AdminClient | None,
    say: Callable[[str], None] = print,
    rescan: Callable[[], Sequence[AdminClient]] = lambda: (),
) -> int:
    """Run one retrain and return its exit code (see the module docstring); raises Refused.

    `rescan`: the replicas to tell to rescan the repository once the version is published (none:
    `client`'s). An admin rescan reaches the replica that takes it; a replica that has not found
    the version cannot apply a release step naming it."""
    version = request.champion
    if version is None:
        if client is None:
            raise Refused("the production version is asked of the server: set HOTSERVE_ADMIN_TOKEN", FAILED)
        version = production_version(client, request.model)
    champion: Champion = find_champion(request.model, version, request.repository, request.checkpoints)
    spec = champion.table_spec()
    say(f"champion: {request.model} v{version} (checkpoint {champion.checkpoint})")

    sink = open_sink(request.sink)
    table = build_table(sink, spec, request.window)
    train_idx, holdout_idx = table.split(request.holdout) if len(table) > 1 else (np.arange(0), np.arange(0))
    check_rows(table, spec, train_idx, holdout_idx, request)
    counts = table.counts
    say(
        f"table: {counts.labelled_rows} labelled rows of {counts.captured_rows} captured in "
        f"[{request.window.start.isoformat()}, {request.window.end.isoformat()}) from {sink.url} "
        f"(versions {sorted(set(table.versions.tolist()))}); {len(train_idx)} train, {len(holdout_idx)} held out "
        f"from {_iso(table.ts[holdout_idx[0]])}"
    )

    parent = load_checkpoint(champion.checkpoint)
    holdout_x, holdout_y = table.features[holdout_idx], table.targets[holdout_idx]
    champion_scores = scores(parent, holdout_x)  # before a warm start trains the same module
    path = request.checkpoints / request.model / TABLES_DIR / f"{uuid.uuid4().hex}.parquet"
    table.write(path, spec.columns)
    dataset = training_dataset(table, train_idx, path, parent)
    result = train(
        dataset, config_of(parent, request.epochs), request.checkpoints, parent=None if request.fresh else parent
    )
    assert isinstance(result, TrainResult)  # one process
    challenger = load_checkpoint(result.path)
    comparison: Comparison = compare(
        spec.task,
        champion_scores,
        scores(challenger, holdout_x),
        holdout_y,
        metric=request.metric,
        min_improvement=request.min_improvement,
        confidence=request.confidence,
        seed=parent.metadata.seed,
    )
    record_retraining(
        result.path,
        RetrainingLineage(
            capture_sink=sink.url,
            window_start=request.window.start.isoformat(),
            window_end=request.window.end.isoformat(),
            captured_rows=counts.captured_rows,
            labelled_rows=counts.labelled_rows,
            labels_read=counts.labels_read,
            train_rows=len(train_idx),
            holdout_rows=len(holdout_idx),
            holdout_start=_iso(table.ts[holdout_idx[0]]),
            served_versions=sorted(set(table.versions.tolist())),
            champion_version=version,
            warm_start=not request.fresh,
            metric=comparison.metric,
            champion_holdout=comparison.champion,
            challenger_holdout=comparison.challenger,
        ),
    )
    say(
        f"trained checkpoint {result.path} ({'fresh' if request.fresh else 'warm start'}, best epoch {result.metadata.best_epoch})"
    )
    say(comparison.summary())
    if not comparison.better:
        raise Refused(f"challenger not better than v{version}: nothing exported", NOT_BETTER)

    from exporters.export.pipeline import export_checkpoint

    exported = export_checkpoint(result.path, request.repository, champion.export_options())
    new_version = exported.manifest.version
    say(f"exported {request.model} v{new_version} to {exported.version_dir}")
    if not request.release:
        say("no release started (--no-release)")
        return 0
    if client is None:
        raise Refused("a release needs the server: set HOTSERVE_ADMIN_TOKEN", FAILED)
    for replica in rescan() or (client,):  # each replica finds the new version before the release names it
        replica.call("POST", "/admin/repository/rescan")
    return start_release(request, new_version)


def start_release(request: RetrainRequest, version: int) -> int:
    """`hotserve release MODEL VERSION --wait` through its own parser and `run` (its exit code)."""
    parser = argparse.ArgumentParser(prog="hotserve release")
    release_cli.add_arguments(parser)
    argv = [request.model, str(version), "--wait", "--poll-s", str(request.poll_s), "--url", request.url]
    argv += ["--timeout-s", str(request.timeout_s)]
    if request.policy is not None:
        argv += ["--policy", str(request.policy)]
    return int(release_cli.run(parser.parse_args(argv)))


__all__ = ["FAILED", "NOT_BETTER", "TOO_FEW_ROWS", "AdminError", "Refused", "RetrainRequest", "retrain"]
