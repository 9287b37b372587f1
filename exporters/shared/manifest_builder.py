"""Assemble `model.json` (server.contract.manifest.ModelManifest) for an exported version.

Last step of `export.pipeline.export_checkpoint` before the version folder is published: the
checkpoint supplies signature, feature spec, drift reference and lineage; the export run
supplies batching defaults, export facts, the finished feature view (`feature_view.py`) and
the sha256 of the final `model.onnx`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.contract import provenance
from server.contract.manifest import (
    BatchingPolicy,
    ExportInfo,
    FeatureSpec,
    ModelManifest,
    PredictionContract,
    sha256_file,
)

if TYPE_CHECKING:  # training.checkpoints imports torch; only the type is needed here
    from training.checkpoints import CheckpointMetadata

# Architecture -> batching defaults. A small MLP costs microseconds per row, so big batches
# and a short wait; the transformer costs ~1 ms per row, so smaller batches dispatched at
# sizes its kernels handle well, with a little more patience for company, and two instances:
# one batch computes while the previous one's answers go out (on 2 CPU cores, 64 clients:
# 1.5k -> 1.7k rows/s, load_tests/benchmark.py).
_BATCHING_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"max_batch_size": 64, "max_queue_delay_ms": 2.0},
    "transformer": {
        "max_batch_size": 32,
        "max_queue_delay_ms": 5.0,
        "preferred_batch_sizes": [8, 16, 32],
        "instances": 2,
    },
}

_LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy")


def batching_policy(
    architecture: str,
    max_batch_size: int | None = None,
    max_queue_delay_ms: float | None = None,
    instances: int | None = None,
) -> BatchingPolicy:
    """The architecture's batching defaults with the operator's overrides applied.

    Preferred sizes above an overridden `max_batch_size` are dropped rather than refused:
    they could never be reached.
    """
    settings = dict(_BATCHING_DEFAULTS.get(architecture, {}))
    if max_batch_size is not None:
        settings["max_batch_size"] = max_batch_size
        settings["preferred_batch_sizes"] = [
            size for size in settings.get("preferred_batch_sizes", []) if size <= max_batch_size
        ]
    if max_queue_delay_ms is not None:
        settings["max_queue_delay_ms"] = max_queue_delay_ms
    if instances is not None:
        settings["instances"] = instances
    return BatchingPolicy(**settings)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced and checked the graph."""
    return provenance.library_versions(_LIBRARIES)


def build_manifest(
    checkpoint_metadata: CheckpointMetadata,
    checkpoint_dir: Path,
    onnx_path: Path,
    batching: BatchingPolicy,
    export: ExportInfo,
    features: FeatureSpec | None = None,
    version: int | None = None,
    prediction: PredictionContract | None = None,
) -> ModelManifest:
    """`model.json` for `onnx_path`, whose sha256 is taken from the file as it is now;
    `features` (from `feature_view.export_feature_spec`) replaces the checkpoint's spec;
    `version` is the repository version (default: the checkpoint's); `prediction` is what the
    answer means (`shared.prediction.prediction_contract`)."""
    return ModelManifest(
        name=checkpoint_metadata.name,
        version=checkpoint_metadata.version if version is None else version,
        inputs=list(checkpoint_metadata.inputs),
        outputs=list(checkpoint_metadata.outputs),
        batching=batching,
        features=features if features is not None else checkpoint_metadata.features,
        drift=checkpoint_metadata.drift,
        lineage=checkpoint_metadata.lineage(checkpoint_dir),
        export=export,
        onnx_sha256=sha256_file(onnx_path),
        prediction=prediction,
    )
