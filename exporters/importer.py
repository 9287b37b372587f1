"""`import_model`: an ONNX file made elsewhere -> checked, optionally optimised graph -> published version.

The control path `hotserve import` runs, offline, with the guarantees of an exported model:
onnx's checker (`onnx.checker`), a servable signature (`onnx_signature`), the few edits it
may make (`graph_edits`), check rows from the reference table or made up (`reference_table`,
`graph_runs`), parity of every candidate against the original file (`parity`), optional
basic optimisation kept only if parity holds (`optimize`) and int8 (`precision`), the drift
reference and metrics, lineage of the source file, and the server's own loader run on the
staged version before the atomic publish (`repository`). Any failure leaves the repository
untouched; a published version is never overwritten.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import ValidationError

from exporters import graph_edits, graph_runs, manifest_builder, onnx_signature, optimize, parity
from exporters import precision, reference_table
from exporters.errors import ExportError, ModelRefused
from exporters.options import FP32_TOLERANCE, INT8_TOLERANCE, MAX_AUC_DROP
from exporters.repository import VersionStaging, ensure_absent, next_version
from server.errors import ModelLoadFailed
from server.registry.manifest import (
    ONNX_FILENAME,
    BatchingPolicy,
    ExportInfo,
    FeatureSpec,
    ImportedFrom,
    Lineage,
    ModelManifest,
    OpLibrary,
    TensorSpec,
    sha256_file,
)
from server.registry.repository import version_dir

logger = logging.getLogger(__name__)

AGAINST = "source"
"""How parity messages name the original file."""
_QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                  "QLinearMatMul", "QLinearConv", "QAttention", "DynamicQuantizeLSTM"}


@dataclass(frozen=True)
class ImportOptions:
    """What `hotserve import` was asked to do."""

    name: str
    version: int | None = None
    """None: the next version after the highest published one."""
    batch_axis: bool = True
    """False (`--no-batch`): serve a graph without a batch axis, one request per run."""
    strip_zipmap: bool = False
    op_libraries: tuple[Path, ...] = ()
    reference: Path | None = None
    features: tuple[str, ...] | None = None
    label: str | None = None
    prediction_output: str | None = None
    feature_spec: Mapping[str, Any] | None = None
    """`FeatureSpec` fields; `input` and `columns` may be left out (filled from the model)."""
    meta: Mapping[str, str] = field(default_factory=dict)
    optimize: bool = True
    quantize: Literal["int8"] | None = None
    tolerance: float = FP32_TOLERANCE
    reduced_tolerance: float = INT8_TOLERANCE
    max_auc_drop: float = MAX_AUC_DROP
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    instances: int | None = None

    def __post_init__(self) -> None:
        if not self.batch_axis and (self.reference is not None or self.max_batch_size is not None):
            raise ExportError("--no-batch serves each request as one whole run: a reference table's "
                              "rows and --max-batch-size do not apply")
        if (self.features or self.label) and self.reference is None:
            raise ExportError("--features and --label describe the --reference table; give it")
        if self.prediction_output and self.reference is None:
            raise ExportError("--prediction-output chooses what the --reference table's drift "
                              "histogram describes; give the table")


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


@dataclass
class _Run:
    """State of one import: the original's outputs on the check rows, and the reports so far."""

    source: Path
    options: ImportOptions
    specs: list[TensorSpec]
    check_inputs: dict[str, np.ndarray] | graph_runs.Samples
    expected: list[np.ndarray]
    output_names: list[str]
    reports: list[parity.ParityReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def outputs(self, path: Path) -> list[np.ndarray]:
        session = graph_runs.open_session(path, self.options.op_libraries)
        if isinstance(self.check_inputs, list):
            return graph_runs.run_samples(session, self.check_inputs)
        return graph_runs.run_rows(session, self.check_inputs)

    def checked(self, stage: str, path: Path, tolerance: float,
                float_outputs_only: bool = False) -> list[np.ndarray]:
        """Parity of `path` against the original on the check rows; recorded in `reports`.

        Non-numeric outputs (string labels) must be equal. With `float_outputs_only` (int8)
        only floating-point outputs are held to the tolerance: a class label may flip where
        its probability sits on the decision boundary, which the metric change judges.
        """
        got = self.outputs(path)
        kinds = [value.dtype.kind for value in self.expected]
        if not float_outputs_only:
            for i in (i for i, kind in enumerate(kinds) if kind in "OSU"):
                if not np.array_equal(self.expected[i], got[i]):
                    raise ExportError(f"parity check failed for the {stage} model: output "
                                      f"{self.output_names[i]!r} differs from the source file's")
        keep = [i for i, kind in enumerate(kinds)
                if kind == "f" or (kind not in "OSU" and not float_outputs_only)]
        report = parity.compare(stage, [self.expected[i] for i in keep], [got[i] for i in keep],
                                tolerance, against=AGAINST)
        self.reports.append(report)
        return got


def import_model(source: Path, repository: Path, options: ImportOptions) -> ImportResult:
    """Import `source` into `repository` as version `options.version` (default: the next one).

    Raises ExportError (ModelRefused, VersionExists, ParityError, MetricRegression) with the
    facts; nothing is written to the repository then.
    """
    started = time.monotonic()
    imported_at = datetime.now(UTC).isoformat(timespec="seconds")
    model, source_sha256 = _load_checked(source)
    producer = (model.producer_name or None, model.producer_version or None)
    source_opsets = onnx_signature.opsets(model)
    domains = _check_domains(source, model, options.op_libraries)
    edits: list[str] = []
    zipmaps = graph_edits.zipmap_outputs(model)
    if options.strip_zipmap:
        if not zipmaps:
            raise ModelRefused(source, "--strip-zipmap given, but no output is made by a ZipMap")
        edits += graph_edits.strip_zipmap(model)
    graph_inputs, graph_outputs = onnx_signature.tensors(source, model.graph)
    if options.batch_axis:
        onnx_signature.check_batch_axis(source, graph_inputs)
    else:
        onnx_signature.check_no_batch_shapes(source, graph_inputs, "input")
        onnx_signature.check_no_batch_shapes(source, graph_outputs, "output")
    specs = [tensor.spec(options.batch_axis) for tensor in graph_inputs]
    reference = (reference_table.read_reference(options.reference, specs, options.features,
                                                options.label) if options.reference else None)
    check_inputs = _check_inputs(specs, reference, options.batch_axis)

    target = version_dir(repository, options.name,
                         options.version or next_version(repository, options.name))
    ensure_absent(target)
    with VersionStaging(target) as staging:
        work = staging.folder / "work"
        work.mkdir()
        original = graph_runs.open_session(source, options.op_libraries)
        classes = zipmaps if options.strip_zipmap else None
        if isinstance(check_inputs, list):
            expected = graph_runs.run_samples(original, check_inputs, classes)
        else:
            expected = graph_runs.run_rows(original, check_inputs, classes)
            graph_runs.check_batch_axis(source, original, check_inputs, expected, options.tolerance,
                                        classes)
            edits += _declare_batch_dims(model, graph_outputs)
        run = _Run(source, options, specs, check_inputs, expected, [o.name for o in graph_outputs])

        imported_path = work / "imported.onnx"
        if edits:
            _save_checked(model, imported_path, source)
        else:
            shutil.copyfile(source, imported_path)  # byte for byte: same sha256 as the source
        final_path = imported_path
        final_outputs = run.checked("imported", imported_path, options.tolerance)
        optimized = False
        if options.optimize:
            optimized_path = work / "optimized.onnx"
            try:
                _optimize(imported_path, optimized_path, options.op_libraries)
                final_outputs = run.checked("optimised", optimized_path, options.tolerance)
                final_path, optimized = optimized_path, True
            except ExportError as exc:
                run.notes.append(f"kept the unoptimised graph: {exc}")
        metric_deltas: dict[str, float] = {}
        if options.quantize == "int8":
            final_path, final_outputs, metric_deltas = _int8(run, final_path, final_outputs, reference,
                                                             work)

        model_path = staging.folder / ONNX_FILENAME
        os.replace(final_path, model_path)
        libraries = _store_libraries(options.op_libraries, domains, staging.folder)
        shutil.rmtree(work)

        drift = None
        metrics: dict[str, float] = {}
        prediction_output = _prediction_output(graph_outputs, final_outputs, options.prediction_output)
        if reference is not None:
            prediction = (final_outputs[[o.name for o in graph_outputs].index(prediction_output)]
                          if prediction_output else None)
            drift = reference_table.drift_reference(reference, prediction_output, prediction)
            if reference.labels is not None and prediction is not None:
                metrics, task = reference_table.model_metrics(prediction, reference.labels)
                run.notes.append(f"metrics on {reference.rows} reference rows ({task}, output "
                                 f"{prediction_output!r}): " +
                                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        features = _feature_spec(source, specs, options, reference, run.notes)
        batching = _batching(options)
        if not options.batch_axis:
            run.notes.append("served with batching off: the graph has no batch axis, so each request "
                             "is one run of the graph with exactly its declared shapes")
        manifest = ModelManifest(
            name=options.name,
            version=int(target.name),
            inputs=specs,
            outputs=[tensor.spec(options.batch_axis) for tensor in graph_outputs],
            batching=batching,
            features=features,
            drift=drift,
            lineage=Lineage(
                architecture="imported",
                metrics=metrics,
                dataset_path=str(reference.path) if reference else None,
                dataset_sha256=reference.sha256 if reference else None,
                library_versions=manifest_builder.library_versions(),
                started_at=imported_at,
                finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
                imported_from=ImportedFrom(
                    file=source.name, sha256=source_sha256, size_bytes=source.stat().st_size,
                    producer_name=producer[0], producer_version=producer[1],
                    ir_version=int(model.ir_version), opsets=source_opsets,
                    imported_at=imported_at, edits=edits, meta=dict(options.meta)),
            ),
            export=ExportInfo(
                opset=onnx_signature.default_opset(onnx.load(str(model_path), load_external_data=False)),
                exported_at=imported_at,
                parity_max_abs_diff=run.reports[-1].max_abs_diff,
                parity_rows=run.reports[-1].rows,
                parity_reference="source onnx",
                optimized=optimized,
                quantization=options.quantize,
                metric_deltas=metric_deltas,
                library_versions=manifest_builder.library_versions(),
            ),
            onnx_sha256=sha256_file(model_path),
            op_libraries=libraries,
        )
        manifest.write(staging.folder)
        _server_accepts(staging.folder, manifest)
        published = staging.publish()

    return ImportResult(
        source=source,
        version_dir=published,
        manifest=manifest,
        parity=run.reports,
        notes=[*edits, *run.notes],
        source_size_bytes=source.stat().st_size,
        model_size_bytes=(published / ONNX_FILENAME).stat().st_size,
        seconds=time.monotonic() - started,
    )


def _load_checked(source: Path) -> tuple[onnx.ModelProto, str]:
    """The model, after onnx's full checker (with shape inference) accepted it."""
    if not source.is_file():
        raise ModelRefused(source, "no such file")
    digest = sha256_file(source)
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise ModelRefused(source, f"not a readable ONNX model: {exc}") from exc
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelRefused(source, f"onnx's checker rejects it: {first_line}") from exc
    return model, digest


def _save_checked(model: onnx.ModelProto, path: Path, source: Path) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelRefused(source, f"the edited graph fails onnx's checker: {exc}") from exc
    onnx.save(model, str(path))


def _check_domains(source: Path, model: onnx.ModelProto, libraries: Sequence[Path]) -> list[str]:
    """Custom-op domains the graph uses; refused unless libraries that provide them are given."""
    domains = onnx_signature.custom_domains(model)
    if domains and not libraries:
        used = "; ".join(f"{domain}: {', '.join(ops)}" for domain, ops in domains.items())
        raise ModelRefused(source, f"the graph uses custom operators onnxruntime does not implement "
                                   f"({used}); give the library that registers them with "
                                   f"--custom-ops-library PATH (e.g. onnxruntime-extensions' "
                                   f"get_library_path())")
    if libraries and not domains:
        raise ModelRefused(source, "--custom-ops-library given, but the graph uses only operators "
                                   "onnxruntime implements")
    for library in libraries:
        if not library.is_file():
            raise ExportError(f"custom-op library {library} is not a file")
    return list(domains)


def _check_inputs(specs: list[TensorSpec], reference: reference_table.ReferenceRows | None,
                  batch_axis: bool) -> dict[str, np.ndarray] | graph_runs.Samples:
    if not batch_axis:
        return graph_runs.generated_samples(specs, graph_runs.GENERATED_RUNS)
    if reference is not None:
        return reference.inputs
    return graph_runs.generated_rows(specs, graph_runs.GENERATED_ROWS)


def _declare_batch_dims(model: onnx.ModelProto,
                        outputs: list[onnx_signature.GraphTensor]) -> list[str]:
    """Outputs declared with a fixed first axis passed `check_batch_axis`: declare it dynamic."""
    fixed = [o.name for o in outputs if o.dims and isinstance(o.dims[0], int)]
    return graph_edits.declare_batch_dims(model, fixed)


def _optimize(source: Path, target: Path, libraries: Sequence[Path]) -> None:
    if libraries:
        raise ExportError("graphs with custom operators are not optimised offline "
                          "(onnxruntime's optimiser needs their library loaded)")
    optimize.optimize_graph(source, target)


def _int8(run: _Run, float_path: Path, float_outputs: list[np.ndarray],
          reference: reference_table.ReferenceRows | None,
          work: Path) -> tuple[Path, list[np.ndarray], dict[str, float]]:
    path = work / "int8.onnx"
    precision.quantize_int8(float_path, path, work)
    ops = {node.op_type for node in onnx_signature.graph_nodes(onnx.load(str(path)).graph)}
    if not ops & _QUANTIZED_OPS:
        raise ModelRefused(run.source, "--quantize int8 changes nothing: the graph has no operator "
                                       "dynamic int8 quantisation handles (MatMul, Gemm, Conv, "
                                       "attention); tree ensembles and linear ONNX-ML operators "
                                       "stay float")
    outputs = run.checked("int8", path, run.options.reduced_tolerance, float_outputs_only=True)
    deltas: dict[str, float] = {}
    labels = reference.labels if reference is not None else None
    index = _probability_index(float_outputs)
    if labels is not None and index is not None and set(np.unique(labels)) <= {0.0, 1.0}:
        deltas = parity.metric_change("int8", float_outputs[index].reshape(len(labels), -1)[:, -1],
                                      outputs[index].reshape(len(labels), -1)[:, -1], labels,
                                      run.options.max_auc_drop)
    else:
        run.notes.append("int8 judged by parity alone: a metric change needs --reference with a "
                         "0/1 --label and a probability output")
    return path, outputs, deltas


def _probability_index(outputs: list[np.ndarray]) -> int | None:
    """The first output holding probabilities of a binary classifier ([N], [N, 1] or [N, 2])."""
    for index, value in enumerate(outputs):
        if (value.dtype.kind == "f" and value.ndim in (1, 2) and value.reshape(len(value), -1).shape[1] <= 2
                and value.size and value.min() >= 0.0 and value.max() <= 1.0):
            return index
    return None


def _prediction_output(outputs: list[onnx_signature.GraphTensor], values: list[np.ndarray],
                       chosen: str | None) -> str | None:
    """The output drift and metrics describe: the chosen one, else the first floating-point one."""
    names = [o.name for o in outputs]
    if chosen is not None:
        if chosen not in names:
            raise ExportError(f"--prediction-output {chosen!r} is not an output of the model {names}")
        return chosen
    return next((name for name, value in zip(names, values, strict=True) if value.dtype.kind == "f"),
                None)


def _feature_spec(source: Path, specs: list[TensorSpec], options: ImportOptions,
                  reference: reference_table.ReferenceRows | None, notes: list[str]) -> FeatureSpec | None:
    """The v1 feature spec: `--feature-spec` completed from the model, or, for a model with one
    2-D numeric input fed by `--features`, every feature a request feature."""
    raw = dict(options.feature_spec) if options.feature_spec is not None else None
    single = specs[0] if len(specs) == 1 and len(specs[0].shape) == 2 else None
    if raw is None:
        if single is None or single.datatype == "BYTES" or reference is None:
            return None
        if len(reference.columns) == 1 and reference.columns == [single.name]:
            return None
        notes.append(f"v1 records: fields {reference.columns} (all request features) fill input "
                     f"{single.name!r}")
        return FeatureSpec(input=single.name, columns=reference.columns,
                           request_features=reference.columns)
    if single is None:
        raise ExportError(f"a feature spec assembles v1 records into one 2-D input; the model has "
                          f"inputs {[(s.name, s.shape) for s in specs]}: its clients use the v2 "
                          f"protocol")
    raw.setdefault("input", single.name)
    if "columns" not in raw:
        raw["columns"] = (reference.columns if reference is not None else
                          [*raw.get("request_features", []), *raw.get("store_features", [])])
    try:
        spec = FeatureSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}"
                             for e in exc.errors())
        raise ExportError(f"--feature-spec is invalid: {problems}") from exc
    if spec.input != single.name:
        raise ExportError(f"--feature-spec input {spec.input!r} is not the model's input "
                          f"{single.name!r}")
    width = single.shape[1]
    if width != -1 and width != len(spec.columns):
        raise ExportError(f"--feature-spec has {len(spec.columns)} columns, input {single.name!r} "
                          f"takes {width}")
    if reference is not None and reference.columns != spec.columns:
        raise ExportError(f"--feature-spec columns {spec.columns} differ from the reference "
                          f"features {reference.columns}: they must be the same, in order")
    return spec


def _batching(options: ImportOptions) -> BatchingPolicy:
    if not options.batch_axis:
        return BatchingPolicy(enabled=False, batch_axis=False, max_batch_size=1,
                              max_queue_delay_ms=0.0, instances=options.instances or 1)
    return manifest_builder.batching_policy("imported", options.max_batch_size,
                                            options.max_queue_delay_ms, options.instances)


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


def _server_accepts(folder: Path, manifest: ModelManifest) -> None:
    """Open the staged version with the server's loader and run its warm-up: what is published
    loads. A graph that fails on the warm-up's zeros or empty strings is refused here, not later."""
    from server.registry.loader import open_version, warm_up_inputs
    from server.settings import Settings

    settings = Settings(execution_providers="CPUExecutionProvider")
    try:
        _, runtime = open_version(folder, manifest.name, manifest.version, settings)
    except ModelLoadFailed as exc:
        raise ExportError(f"the server would not load this version: {exc.message}") from exc
    try:
        for rows in sorted({1, manifest.batching.max_batch_size}):
            runtime.run(warm_up_inputs(manifest, rows))
    except Exception as exc:
        raise ExportError(f"the server's warm-up (zeros, empty strings) fails on this graph: "
                          f"{exc}") from exc
    finally:
        runtime.close()
