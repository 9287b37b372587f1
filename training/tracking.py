"""Training runs tracked in MLflow, when the user asks for it (`MLFLOW_TRACKING_URI` or
`--mlflow-experiment`): parameters, metrics per epoch and final, the training table as a
dataset input with its digest, hotserve's lineage as tags, the checkpoint and the reference
histograms as artifacts. The run id goes into the checkpoint's metadata, so a served version
links back to its run.

Tracking never decides whether a model gets trained: MLflow unreachable (or the `mlflow` extra
missing) is said loudly and the training completes untracked, unless `required` (then
`TrackingError`). A failure mid-run stops the tracking, not the training. Only rank 0 tracks.
MLflow is imported here only (the `mlflow` extra: `pip install -e '.[mlflow]'`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from server.contract.manifest import MlflowRunRef
from server.redaction import redacted

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from training.checkpoints import CheckpointMetadata

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
HTTP_RETRIES = "2"
"""MLflow's client retries a refused connection for minutes by default; a training run should not wait."""
DIGEST_CHARS = 16
"""MLflow stores a dataset digest of at most 36 characters; the full sha256 goes in its profile."""


class TrackingError(RuntimeError):
    """Tracking was required (`--mlflow-required`) and could not be done; the message says why."""


@dataclass(frozen=True, slots=True)
class TrackingRequest:
    """What the user asked for: where to track and how strictly."""

    tracking_uri: str | None
    experiment: str | None
    required: bool = False

    @classmethod
    def from_env(cls, experiment: str | None, required: bool) -> TrackingRequest:
        return cls(os.environ.get("MLFLOW_TRACKING_URI") or None, experiment, required)

    @property
    def wanted(self) -> bool:
        return self.tracking_uri is not None or self.experiment is not None


@dataclass
class MlflowRun:
    """One MLflow run a training logs to. Every call after a failure is skipped (said once)."""

    client: MlflowClient
    ref: MlflowRunRef
    failed: str | None = None
    _epochs: int = field(default=0)

    def log_epoch(self, epoch: int, train_loss: float, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {"train_loss": train_loss, **{f"val_{k}": v for k, v in metrics.items()}}
        self._call(
            f"log the metrics of epoch {epoch}",
            lambda: self.client.log_batch(
                self.ref.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in values.items()]
            ),
        )

    def finish(self, checkpoint_dir: Path, metadata: CheckpointMetadata) -> None:
        """The final metrics, dataset input, lineage tags and artifacts; the run ends FINISHED."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, RunTag

        now = int(time.time() * 1000)
        step = metadata.best_epoch
        tags = {
            "hotserve.version": str(metadata.version),
            "hotserve.checkpoint": str(checkpoint_dir),
            "hotserve.best_epoch": str(metadata.best_epoch),
            "hotserve.dataset_sha256": metadata.dataset_sha256,
            "hotserve.world_size": str(metadata.world_size),
            "hotserve.device": metadata.device,
            **({"hotserve.amp": metadata.amp} if metadata.amp else {}),
            **{f"hotserve.library.{k}": v for k, v in metadata.library_versions.items()},
        }
        if metadata.git_commit is not None:
            tags["mlflow.source.git.commit"] = metadata.git_commit
        if metadata.git_dirty is not None:
            tags["hotserve.git_dirty"] = str(metadata.git_dirty).lower()
        dataset = Dataset(
            name=Path(metadata.dataset_path).name or metadata.dataset.source,
            digest=metadata.dataset_sha256[:DIGEST_CHARS],
            source_type="local" if not metadata.dataset.source.startswith("demo:") else "code",
            source=json.dumps({"uri": metadata.dataset_path}),
            schema=json.dumps({"columns": list(metadata.features.columns) if metadata.features else []}),
            profile=json.dumps({"rows": metadata.dataset_rows, "sha256": metadata.dataset_sha256}),
        )
        self._call(
            "log the final metrics and lineage",
            lambda: self.client.log_batch(
                self.ref.run_id,
                metrics=[Metric(k, float(v), now, step) for k, v in metadata.metrics.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            ),
        )
        self._call(
            "log the training table",
            lambda: self.client.log_inputs(
                self.ref.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
            ),
        )
        self._call(
            "upload the checkpoint",
            lambda: self.client.log_artifacts(self.ref.run_id, str(checkpoint_dir), artifact_path="checkpoint"),
        )
        self._call(
            "upload the reference histograms",
            lambda: self.client.log_dict(
                self.ref.run_id, metadata.drift.model_dump(mode="json"), "reference_histograms.json"
            ),
        )
        self.end("FINISHED")

    def end(self, status: str) -> None:
        self._call(f"end the run as {status}", lambda: self.client.set_terminated(self.ref.run_id, status))

    def _call(self, what: str, call: Any) -> None:
        if self.failed is not None:
            return
        try:
            call()
        except Exception as error:  # MlflowException, requests' errors, OSError: all mean "not tracked"
            self.failed = f"could not {what}: {error}"
            log.warning("MLflow run %s is INCOMPLETE (training goes on): %s", self.ref.run_id, self.failed)


def start_run(
    request: TrackingRequest, model: str, params: dict[str, Any], tags: dict[str, str] | None = None
) -> MlflowRun | None:
    """An MLflow run for this training (its parameters logged), or None when tracking is not
    wanted, or not possible and not required (said loudly). TrackingError when required."""
    if not request.wanted:
        return None
    try:
        return _start(request, model, params, tags or {})
    except TrackingError as error:
        if request.required:
            raise
        log.warning("NOT TRACKED in MLflow: %s; the training goes on without it", error)
        return None


def _start(request: TrackingRequest, model: str, params: dict[str, Any], tags: dict[str, str]) -> MlflowRun:
    try:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Param
    except ImportError as error:
        raise TrackingError(f"the mlflow package is not installed ({error}); pip install -e '.[mlflow]'") from None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    uri = request.tracking_uri or mlflow.get_tracking_uri()
    _probe(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_name = request.experiment or f"hotserve-{model}"
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(experiment_name)
        )
        run = client.create_run(
            experiment_id,
            run_name=f"train {model}",
            tags={"hotserve.model": model, "mlflow.source.name": "hotserve train", **tags},
        )
        client.log_batch(run.info.run_id, params=[Param(k, _param(v)) for k, v in sorted(params.items())])
    except Exception as error:
        raise TrackingError(f"MLflow at {redacted(uri)} refused the run: {error}") from error
    ref = MlflowRunRef(tracking_uri=redacted(uri), experiment_id=experiment_id, run_id=run.info.run_id)
    log.info("tracking in MLflow: experiment %r, run %s (%s)", experiment_name, ref.run_id, ref.tracking_uri)
    return MlflowRun(client, ref)


def _probe(uri: str) -> None:
    """A tracking server that does not answer its health check fails now, not after minutes of retries."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow at {redacted(uri)} answered {response.status} to /health")
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(f"MLflow at {redacted(uri)} is unreachable: {error}") from None


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]  # MLflow's limit on a parameter value
