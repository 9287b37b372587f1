"""`import_model`: an ONNX file made elsewhere -> checked graph -> published repository version.

The control path `hotserve import` runs, offline, with the guarantees of an exported model.
Steps, each a module of this package or of `exporters/shared/`: read and check the file
(`source_model`: onnx's checker, custom-op domains, ZipMap, signature and batch axis), lay out
the check rows (`shared.reference_table` or `graph_runs`' generated ones), check every candidate
graph against the original (`source_parity`: as imported, optimised, int8), record drift
reference, metrics, the prediction contract (`--task` or the task the labels show,
`shared.prediction`), feature spec (`shared.reference_table`, `features`) and the source file's
lineage, open the staged version with the server's own loader and warm-up, and publish
atomically (`shared.publish`). Any failure leaves the repository untouched; a version is never
overwritten.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from pydantic import ValidationError

from exporters.errors import ExportError, VersionExists
from exporters.imports import graph_runs
from exporters.imports.features import feature_spec
from exporters.imports.options import ImportOptions
from exporters.imports.registered_contract import carry_registered
from exporters.imports.source_model import SourceModel, read_source
from exporters.imports.source_parity import Candidate, CheckInputs, original_outputs, publishable_graph
from exporters.shared import manifest_builder, parity, reference_table, signature
from exporters.shared.checks import REGRESSION_AGREEMENT_STD
from exporters.shared.feast_options import with_feast
from exporters.shared.prediction import prediction_contract
from exporters.shared.publish import VersionStaging, next_version, publish_version
from server.contract.manifest import (
    ONNX_FILENAME,
    BatchingPolicy,
    ExportInfo,
    ImportedFrom,
    Lineage,
    ModelManifest,
    OpLibrary,
    PredictionContract,
    Task,
    TensorSpec,
    sha256_file,
)
from server.contract.provenance import utc_timestamp
from server.registry.repository import version_dir

__all__ = ["ImportOptions", "ImportResult", "import_model"]


@dataclass(frozen=True)
class ImportResult:
    """What was published and the evidence that it matches the original file."""

    source: Path
    version_dir: Path
    manifest: ModelManifest
    parity: list[parity.ParityReport]
    """Every graph checked against the original, in order; the last one is the published graph."""
    notes: list[str]
    source_size_bytes: int
    model_size_bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    """What of a registry version's model.json could not be carried over (`registered_contract.py`)."""


def import_model(source: Path, repository: Path, options: ImportOptions) -> ImportResult:
    """Import `source` into `repository` as version `options.version` (default: the next one).

    Raises ExportError (ModelRefused, VersionExists, ParityError, MetricRegression) with the
    facts; nothing is written to the repository then.
    """
    started = time.monotonic()
    imported_at = utc_timestamp()
    model = read_source(source, options)
    inputs = model.input_specs
    reference = (
        reference_table.read_reference(options.reference, inputs, options.features, options.label)
        if options.reference
        else None
    )
    target = version_dir(repository, options.name, options.version or next_version(repository, options.name))
    try:
        with VersionStaging(target) as staging:
            work = staging.folder / "work"
            work.mkdir()
            checks = original_outputs(model, options, _check_inputs(inputs, reference, options))
            final = publishable_graph(checks, reference.labels if reference else None, work)
            model_path = staging.folder / ONNX_FILENAME
            os.replace(final.path, model_path)
            shutil.rmtree(work)
            notes = [*model.edits, *checks.notes]
            output, prediction = _prediction(model, final, options.prediction_output)
            metrics, shown = _metrics(reference, output, prediction, notes)
            drift = reference_table.drift_reference(reference, output, prediction) if reference else None
            # The drift reference names the prediction output when it describes one; else the contract does.
            named = None if drift is not None and drift.prediction_output is not None else output
            contract = _contract(options, shown, reference, named, prediction, notes)
            export = ExportInfo(
                opset=signature.default_opset(onnx.load(str(model_path))),
                exported_at=imported_at,
                parity_max_abs_diff=checks.reports[-1].max_abs_diff,
                parity_rows=checks.reports[-1].rows,
                parity_reference="source onnx",
                optimized=final.optimized,
                quantization=options.quantize,
                metric_deltas=final.metric_deltas,
                library_versions=manifest_builder.library_versions(),
            )
            features = with_feast(
                feature_spec(inputs, options.feature_spec, reference.columns if reference else None, notes),
                options.feast,
                options.name,
            )
            libraries = _store_libraries(options.op_libraries, model.custom_domains, staging.folder)
            try:
                manifest = ModelManifest(
                    name=options.name,
                    version=int(target.name),
                    inputs=inputs,
                    outputs=model.output_specs,
                    batching=_batching(options, notes),
                    features=features,
                    drift=drift,
                    lineage=_lineage(reference, metrics, imported_at),
                    export=export,
                    imported_from=_imported_from(model, options, imported_at),
                    onnx_sha256=sha256_file(model_path),
                    op_libraries=libraries,
                    prediction=contract,
                )
            except ValidationError as exc:  # the options describe a model this is not (see _contract)
                reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
                raise ExportError(f"model.json: {reasons}") from exc
            manifest, warnings = carry_registered(manifest, options, notes)
            published = publish_version(staging, manifest)
    except VersionExists as exc:  # asked for with --version, or another import took the number
        raise VersionExists(exc.version_dir, "import without --version to publish the next version") from exc
    return ImportResult(
        source=source,
        version_dir=published,
        manifest=manifest,
        parity=checks.reports,
        notes=notes,
        source_size_bytes=model.size_bytes,
        model_size_bytes=(published / ONNX_FILENAME).stat().st_size,
        seconds=time.monotonic() - started,
        warnings=warnings,
    )


def _check_inputs(
    inputs: list[TensorSpec], reference: reference_table.ReferenceRows | None, options: ImportOptions
) -> CheckInputs:
    """The rows every candidate runs on: the reference table's, else generated ones."""
    if not options.batch_axis:
        return graph_runs.generated_samples(inputs, graph_runs.GENERATED_RUNS)
    if reference is not None:
        return reference.inputs
    return graph_runs.generated_rows(inputs, graph_runs.GENERATED_ROWS)


def _batching(options: ImportOptions, notes: list[str]) -> BatchingPolicy:
    if not options.batch_axis:
        notes.append(
            "served with batching off: the graph has no batch axis, so each request is "
            "one run of the graph with exactly its declared shapes"
        )
        return BatchingPolicy(
            enabled=False, batch_axis=False, max_batch_size=1, max_queue_delay_ms=0.0, instances=options.instances or 1
        )
    return manifest_builder.batching_policy(
        "imported", options.max_batch_size, options.max_queue_delay_ms, options.instances
    )


def _prediction(model: SourceModel, final: Candidate, chosen: str | None) -> tuple[str | None, np.ndarray | None]:
    """The output drift and metrics describe, and its values on the check rows: the chosen one,
    else the first floating-point output (a classifier's probabilities, a regressor's value)."""
    names = [o.name for o in model.outputs]
    if chosen is not None and chosen not in names:
        raise ExportError(f"--prediction-output {chosen!r} is not an output of the model {names}")
    output = chosen or next(
        (name for name, value in zip(names, final.outputs, strict=True) if value.dtype.kind == "f"), None
    )
    return output, (final.outputs[names.index(output)] if output else None)


_TASK_WORDS: dict[Task, str] = {
    "binary": "binary classification",
    "multiclass": "multiclass classification",
    "regression": "regression",
}


def _metrics(
    reference: reference_table.ReferenceRows | None, output: str | None, prediction: np.ndarray | None, notes: list[str]
) -> tuple[dict[str, float], Task | None]:
    """The published graph's metrics on the labelled reference rows and the task they show
    (({}, None) without labels)."""
    if reference is None or reference.labels is None or prediction is None:
        return {}, None
    metrics, task = reference_table.model_metrics(prediction, reference.labels)
    notes.append(
        f"metrics on {reference.rows} reference rows ({_TASK_WORDS[task]}, output {output!r}): "
        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )
    return metrics, task


def _contract(
    options: ImportOptions,
    shown: Task | None,
    reference: reference_table.ReferenceRows | None,
    output: str | None,
    prediction: np.ndarray | None,
    notes: list[str],
) -> PredictionContract | None:
    """What the answer means: `--task`, else the task the labels showed (`shown`); None, said in
    a note, when neither tells it. A regression tolerance not given is derived from the spread
    of the reference labels, else of the predictions on the reference rows."""
    task = options.task or shown
    if task is None:
        if options.decision_threshold is not None or options.agreement_tolerance is not None:
            raise ExportError(
                "--decision-threshold and --agreement-tolerance belong to a task: give --task "
                "(or a --reference table whose --label shows it)"
            )
        notes.append(
            "no task recorded (give --task, or a --reference table with --label): a shadow of this "
            "version is compared by every output within 1e-4 unless its policy says otherwise"
        )
        return None
    if options.task is not None and shown is not None and shown != options.task:
        notes.append(f"the reference labels look like a {shown} model's; recorded {options.task}, as --task says")
    target_std = None
    if task == "regression" and options.agreement_tolerance is None and reference is not None:
        spread, of = (reference.labels, "labels") if reference.labels is not None else (prediction, "predictions")
        if spread is not None:
            target_std = float(np.std(spread.astype(np.float64)))
            notes.append(
                f"agreement tolerance {REGRESSION_AGREEMENT_STD * target_std:.4g}: {REGRESSION_AGREEMENT_STD} x "
                f"the standard deviation of the {reference.rows} reference {of}"
            )
    return prediction_contract(task, output, options.decision_threshold, options.agreement_tolerance, target_std)


def _lineage(reference: reference_table.ReferenceRows | None, metrics: dict[str, float], imported_at: str) -> Lineage:
    """The reference table the version was checked and described on, and its metrics there."""
    return Lineage(
        architecture="imported",
        metrics=metrics,
        dataset_path=str(reference.path) if reference else None,
        dataset_sha256=reference.sha256 if reference else None,
        library_versions=manifest_builder.library_versions(),
        started_at=imported_at,
        finished_at=utc_timestamp(),
    )


def _imported_from(model: SourceModel, options: ImportOptions, imported_at: str) -> ImportedFrom:
    """The source file as it was, its producer, the edits made and the `--meta` pairs."""
    return ImportedFrom(
        file=model.path.name,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        ir_version=model.ir_version,
        opsets=model.opsets,
        imported_at=imported_at,
        edits=model.edits,
        meta=dict(options.meta),
        registry=options.registry,
    )


def _store_libraries(libraries: Sequence[Path], domains: list[str], folder: Path) -> list[OpLibrary]:
    """Copy the custom-op libraries into the version folder: a version moves as one folder."""
    stored = []
    for library in libraries:
        target = folder / library.name
        if target.exists():
            raise ExportError(f"two custom-op libraries are named {library.name}")
        shutil.copyfile(library, target)
        stored.append(OpLibrary(file=library.name, sha256=sha256_file(target), domains=domains))
    return stored
