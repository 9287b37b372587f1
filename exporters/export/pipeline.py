"""`export_checkpoint`: checkpoint -> checked ONNX graph -> published repository version.

The control path `hotserve export` runs, offline. Steps, each a module of this folder or of
`exporters/shared/`: load (`source`), export fp32 (`onnx_export`; a multiclass graph gets its
class names, `class_labels`), parity against PyTorch (`shared.parity`), optional basic graph
optimisation kept only if parity still holds (`shared.optimize`), optional int8/fp16 variant
judged by parity and metric change (`shared.precision`), `model.json` (`shared.manifest_builder`,
with the prediction contract of the checkpoint's task, `shared.prediction`),
the server's loader and warm-up on the staged version, atomic publish (`shared.publish`). Any
failure leaves the repository untouched. The repository version is the checkpoint's number
unless `ExportOptions.version` names another (a re-export with other serving options);
lineage names the checkpoint either way.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from exporters.errors import ExportError
from exporters.export import class_labels, feature_view, onnx_export, source
from exporters.export.options import ExportOptions
from exporters.shared import manifest_builder, optimize, parity, precision, prediction, signature
from exporters.shared.publish import VersionStaging, ensure_absent, is_published, next_version, publish_version
from server.contract.manifest import ONNX_FILENAME, ExportInfo, ModelManifest
from server.contract.provenance import utc_timestamp
from server.registry.repository import version_dir
from training.checkpoints import LoadedCheckpoint
from training.models import RegressionModel
from training.tasks import LABEL_OUTPUT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """What was published and the evidence that it matches the checkpoint."""

    checkpoint: Path
    version_dir: Path
    manifest: ModelManifest
    parity: list[parity.ParityReport]
    """Every graph checked, in order; the last one is the published graph."""
    float_size_bytes: int
    model_size_bytes: int
    seconds: float
    """From the loaded checkpoint to the published version."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Graph:
    """A candidate ONNX file and its outputs on the held-out rows."""

    path: Path
    outputs: list[np.ndarray]


@dataclass
class _Run:
    """State of one export while its graphs are built in the staging folder's `work/`."""

    loaded: LoadedCheckpoint
    holdout: dict[str, np.ndarray]
    reference: list[np.ndarray]
    """PyTorch's outputs on the held-out rows: what every graph must reproduce (a multiclass
    module's second output is class indices; graphs answer with the class names)."""
    work: Path
    options: ExportOptions
    scale: float = 1.0
    """A regression target's standard deviation: parity differences are measured in it."""
    reports: list[parity.ParityReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def checked(self, stage: str, path: Path, tolerance: float) -> _Graph:
        """Full ONNX check, signature check and parity of `path`; recorded in `reports`."""
        metadata = self.loaded.metadata
        onnx_export.check_model(path)
        onnx_export.verify_signature(path, metadata.inputs, metadata.outputs)
        outputs = parity.onnx_outputs(path, self.holdout)
        if metadata.task == "multiclass" and metadata.classes is not None:
            report = parity.compare(stage, self.reference[:1], outputs[:1], tolerance)
            ties = parity.compare_labels(
                stage, self.reference[0], self.reference[1], outputs[1], metadata.classes, tolerance
            )
            report = dataclasses.replace(report, near_ties=ties)
        else:
            report = parity.compare(stage, self.reference, outputs, tolerance, self.scale)
        self.reports.append(report)
        return _Graph(path, outputs)


def _float_graph(run: _Run) -> tuple[_Graph, bool]:
    """The fp32 graph, basic-optimised when that keeps parity; and whether it is."""
    metadata = run.loaded.metadata
    fp32_path = run.work / "fp32.onnx"
    onnx_export.export_onnx(
        run.loaded.module,
        onnx_export.example_batch(run.holdout, metadata.inputs),
        metadata.inputs,
        metadata.outputs,
        fp32_path,
        run.options.opset,
    )
    if metadata.task == "multiclass" and metadata.classes is not None:
        class_labels.attach_class_names(fp32_path, LABEL_OUTPUT, metadata.classes)
    graph = run.checked("fp32", fp32_path, run.options.tolerance)
    if not run.options.optimize:
        return graph, False
    optimized_path = run.work / "optimized.onnx"
    try:
        optimize.optimize_graph(fp32_path, optimized_path)
        return run.checked("optimised fp32", optimized_path, run.options.tolerance), True
    except ExportError as exc:
        note = f"kept the unoptimised graph: {exc}"
        run.notes.append(note)
        return graph, False


def _reduced_graph(run: _Run, stage: str, float_graph: _Graph) -> tuple[_Graph, dict[str, float]]:
    """The int8 or fp16 variant of `float_graph` and its metric change against it."""
    path = run.work / f"{stage}.onnx"
    if stage == "int8":
        precision.quantize_int8(float_graph.path, path, run.work)
    else:
        precision.convert_fp16(float_graph.path, path)
    graph = run.checked(stage, path, run.options.reduced_tolerance_for(run.loaded.metadata.task))
    options = run.options
    deltas = parity.metric_change(
        stage,
        float_graph.outputs[0],
        graph.outputs[0],
        np.asarray(run.loaded.holdout_labels),
        options.max_auc_drop,
        task=run.loaded.metadata.task,
        max_accuracy_drop=options.max_accuracy_drop,
        max_rmse_increase=options.max_rmse_increase,
    )
    return graph, deltas


def _version(repository: Path, name: str, checkpoint_version: int, options: ExportOptions) -> int:
    """The repository version to publish: `options.version`, else the checkpoint's number or,
    with `next_free_when_taken` and that number already published, the next free one."""
    if options.version is not None:
        return options.version
    if options.next_free_when_taken and is_published(version_dir(repository, name, checkpoint_version)):
        return next_version(repository, name)
    return checkpoint_version


def export_checkpoint(checkpoint: Path, repository: Path, options: ExportOptions | None = None) -> ExportResult:
    """Export `checkpoint` (version or model folder) into `repository` as a new version.

    Raises ExportError (CheckpointUnusable, VersionExists, ParityError, MetricRegression,
    SignatureMismatch) with the facts; nothing is written to the repository then.
    """
    return export_loaded(source.open_checkpoint(source.resolve_checkpoint(checkpoint)), repository, options)


def export_loaded(loaded: LoadedCheckpoint, repository: Path, options: ExportOptions | None = None) -> ExportResult:
    """Export an already loaded checkpoint (`export_checkpoint` past finding and loading it)."""
    options = options or ExportOptions()
    started = time.monotonic()
    checkpoint_dir = loaded.path
    metadata = loaded.metadata
    target = version_dir(repository, metadata.name, _version(repository, metadata.name, metadata.version, options))
    ensure_absent(target)  # fail before minutes of work, not after
    module = loaded.module
    scale = float(module.target_std) if isinstance(module, RegressionModel) else 1.0
    # The checkpoint's drift reference names the prediction output; the contract reuses it.
    contract = prediction.prediction_contract(
        metadata.task, None, options.decision_threshold, options.agreement_tolerance, target_std=scale
    )
    features = feature_view.export_feature_spec(metadata, options, repository)
    holdout = source.holdout_arrays(loaded)
    reference = parity.torch_outputs(loaded.module, holdout, [s.name for s in metadata.inputs])

    with VersionStaging(target) as staging:
        run = _Run(loaded, holdout, reference, staging.folder / "work", options, scale)
        if int(target.name) != metadata.version:
            run.notes.append(f"checkpoint version {metadata.version} published as version {target.name}")
        run.work.mkdir()
        logger.info("exporting %s checkpoint %d to ONNX as version %s", metadata.name, metadata.version, target.name)
        float_graph, optimized = _float_graph(run)
        final = float_graph
        metric_deltas: dict[str, float] = {}
        if options.reduced_stage is not None:
            final, metric_deltas = _reduced_graph(run, options.reduced_stage, float_graph)
        float_size = float_graph.path.stat().st_size
        model_path = staging.folder / ONNX_FILENAME
        os.replace(final.path, model_path)
        shutil.rmtree(run.work)

        export_info = ExportInfo(
            opset=signature.default_opset(onnx.load(str(model_path), load_external_data=False)),
            exported_at=utc_timestamp(),
            parity_max_abs_diff=run.reports[-1].max_abs_diff,
            parity_rows=run.reports[-1].rows,
            optimized=optimized,
            quantization=options.quantize,
            fp16=options.fp16,
            metric_deltas=metric_deltas,
            library_versions=manifest_builder.library_versions(),
        )
        batching = manifest_builder.batching_policy(
            metadata.architecture, options.max_batch_size, options.max_queue_delay_ms, options.instances
        )
        manifest = manifest_builder.build_manifest(
            metadata,
            checkpoint_dir,
            model_path,
            batching,
            export_info,
            features,
            version=int(target.name),
            prediction=contract,
        )
        published = publish_version(staging, manifest)

    seconds = time.monotonic() - started
    return ExportResult(
        checkpoint=checkpoint_dir,
        version_dir=published,
        manifest=manifest,
        parity=run.reports,
        float_size_bytes=float_size,
        model_size_bytes=(published / ONNX_FILENAME).stat().st_size,
        seconds=seconds,
        notes=run.notes,
    )
