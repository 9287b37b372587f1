"""`hotserve import`: the command line over `exporters.imports.pipeline.import_model`.

Imported when the `hotserve` parser is built, so onnx, pandas and the importer are imported
only in `run` (it needs the `train` extra's onnx and pandas, never torch). Exit codes, as
`hotserve export`: 0 published; 1 refused (file unusable, version exists, bad options);
3 a candidate graph failed its parity or metric check against the original file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters.shared import cli_args
from exporters.shared.checks import FP32_TOLERANCE, INT8_TOLERANCE, MAX_AUC_DROP, REGRESSION_AGREEMENT_STD
from exporters.shared.cli_args import finite_float, format_size, non_negative_float
from exporters.shared.feast_options import add_feast_arguments, feast_options
from exporters.shared.prediction import describe
from server.contract.manifest import DEFAULT_DECISION_THRESHOLD
from training.tasks import TASKS

if TYPE_CHECKING:
    from server.contract.manifest import ModelManifest, RegistryModelRef


def _columns(text: str) -> tuple[str, ...]:
    columns = tuple(c.strip() for c in text.split(",") if c.strip())
    if not columns:
        raise argparse.ArgumentTypeError("expected comma-separated column names")
    return columns


def _meta(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def _feature_spec(text: str) -> dict[str, Any]:
    """A JSON object inline, or the path of a file holding one."""
    source = text if text.lstrip().startswith("{") else None
    if source is None:
        try:
            source = Path(text).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text}: {exc}") from exc
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of feature spec fields")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="the ONNX file (skl2onnx, onnxmltools, tf2onnx, ...), or an MLflow registry version: "
        "models:/NAME@ALIAS or models:/NAME/VERSION (MLFLOW_TRACKING_URI; the `mlflow` extra)",
    )
    parser.add_argument("--name", required=True, help="model name in the repository")
    cli_args.add_destination(parser, "name", "the next after the highest published")
    graph = parser.add_argument_group("graph")
    graph.add_argument(
        "--no-batch",
        dest="batch_axis",
        action="store_false",
        help="the graph has no batch axis: serve it with batching off, each request "
        "one run of exactly its declared shapes (v2 only)",
    )
    graph.add_argument(
        "--strip-zipmap", action="store_true", help="replace a classifier's ZipMap output by its probability tensor"
    )
    graph.add_argument(
        "--custom-ops-library",
        dest="op_libraries",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="shared library registering the graph's custom operators; copied into the version folder (repeatable)",
    )
    reference = parser.add_argument_group("reference table (drift reference, metrics, check rows)")
    reference.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="DATA.csv|parquet",
        help="rows to check parity on and to describe for drift monitoring",
    )
    reference.add_argument(
        "--features",
        type=_columns,
        default=None,
        help="feature columns in input order (default: every column but the label)",
    )
    reference.add_argument("--label", default=None, help="label column: records the model's metrics")
    reference.add_argument(
        "--prediction-output",
        default=None,
        help="output holding the prediction: what the prediction histogram, the metrics and shadow "
        "agreement describe (default: the first floating-point output)",
    )
    parser.add_argument(
        "--feature-spec",
        type=_feature_spec,
        default=None,
        metavar="JSON|FILE",
        help='v1 records: {"request_features": [...], "store_features": [...], '
        '"entity_key": ..., "defaults": {...}} (input and columns default '
        "from the model and --features)",
    )
    parser.add_argument(
        "--meta",
        type=_meta,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="free-form lineage entry (repeatable)",
    )
    add_feast_arguments(parser)
    checks = parser.add_argument_group("optimisation and checks")
    checks.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="skip the offline onnxruntime graph optimisation (basic level)",
    )
    checks.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="dynamic int8 quantisation (MatMul/Gemm/Conv graphs, CPU targets)",
    )
    checks.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=FP32_TOLERANCE,
        help="max |published - source| for float graphs (default %(default)s)",
    )
    checks.add_argument(
        "--reduced-tolerance",
        type=non_negative_float,
        default=INT8_TOLERANCE,
        help="max |int8 - source| on floating-point outputs (default %(default)s)",
    )
    checks.add_argument(
        "--max-auc-drop",
        type=non_negative_float,
        default=MAX_AUC_DROP,
        help="largest AUC loss int8 may cause on the reference rows (default %(default)s)",
    )
    cli_args.add_batching(parser, "imported model's")
    meaning = parser.add_argument_group("prediction (what a shadow of this version is compared by)")
    meaning.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="what the model predicts (default: what a --reference table's --label shows; without "
        "either, no task is recorded and shadows are compared by every output within 1e-4)",
    )
    meaning.add_argument(
        "--decision-threshold",
        type=finite_float,
        default=None,
        help=f"binary: the score at or above which a row is positive (default {DEFAULT_DECISION_THRESHOLD})",
    )
    meaning.add_argument(
        "--agreement-tolerance",
        type=non_negative_float,
        default=None,
        help="regression: answers this close, in target units, are the same answer (default "
        f"{REGRESSION_AGREEMENT_STD} x the standard deviation of the reference labels, else of the predictions)",
    )


def run(args: argparse.Namespace) -> int:
    from exporters.shared.mlflow_registry import RegistryError, fetch_registered, is_models_uri

    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="hotserve-import-") as download:
        source, registry, registered = Path(args.model), None, None
        if is_models_uri(args.model):
            try:
                fetched = fetch_registered(args.model, Path(download))
            except RegistryError as exc:
                print(f"hotserve import: error: {exc}", file=sys.stderr)
                return cli_args.EXIT_REFUSED
            source, registry, registered = fetched.onnx_path, fetched.ref, fetched.manifest
            print(f"fetched {args.model}: {registry.name} version {registry.version} (run {registry.run_id})")
            if fetched.problem is not None:
                print(f"hotserve import: warning: {args.model}: {fetched.problem}", file=sys.stderr)
        return _publish(args, source, registry, registered)


def _publish(
    args: argparse.Namespace, source: Path, registry: RegistryModelRef | None, registered: ModelManifest | None
) -> int:
    from exporters.imports.options import ImportOptions
    from exporters.imports.pipeline import ImportResult, import_model

    def publish() -> ImportResult:
        options = ImportOptions(
            name=args.name,
            version=args.version,
            batch_axis=args.batch_axis,
            strip_zipmap=args.strip_zipmap,
            op_libraries=tuple(args.op_libraries),
            reference=args.reference,
            features=args.features,
            label=args.label,
            prediction_output=args.prediction_output,
            feature_spec=args.feature_spec,
            feast=feast_options(args),
            meta=dict(args.meta),
            registry=registry,
            registered_manifest=registered,
            optimize=args.optimize,
            quantize=args.quantize,
            tolerance=args.tolerance,
            reduced_tolerance=args.reduced_tolerance,
            max_auc_drop=args.max_auc_drop,
            max_batch_size=args.max_batch_size,
            max_queue_delay_ms=args.max_queue_delay_ms,
            instances=args.instances,
            task=args.task,
            decision_threshold=args.decision_threshold,
            agreement_tolerance=args.agreement_tolerance,
        )
        return import_model(source, args.repository, options)

    result = cli_args.run_pipeline("import", "the graph does not match the original file", publish)
    if isinstance(result, int):
        return result

    manifest = result.manifest
    origin = manifest.imported_from
    producer = " ".join(p for p in (origin.producer_name, origin.producer_version) if p) if origin else ""
    print(
        f"published {result.version_dir} from {args.model if registry else result.source} "
        f"({producer or 'unknown producer'}) "
        f"in {result.seconds:.1f} s"
    )
    for kind, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
        for spec in specs:
            print(f"  {kind} {spec.name}: {spec.datatype} {spec.shape}")
    for report in result.parity:
        print(
            f"  parity {report.stage}: max |onnx - source| = {report.max_abs_diff:.3g} "
            f"(tolerance {report.tolerance:.3g}, {report.rows} rows)"
        )
    print(
        f"  model.onnx {format_size(result.model_size_bytes)} "
        f"(source {format_size(result.source_size_bytes)}), sha256 {manifest.onnx_sha256}"
    )
    if manifest.prediction is not None:
        print(f"  {describe(manifest.prediction, manifest.prediction_output)}")
    for note in result.notes:
        print(f"  note: {note}")
    for warning in result.warnings:
        print(f"hotserve import: warning: {warning}", file=sys.stderr)
    return 0
