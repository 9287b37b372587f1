"""`hotserve import`: the command line over `exporters.importer.import_model`.

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
from pathlib import Path
from typing import Any

from exporters.cli import (
    EXIT_PARITY,
    EXIT_REFUSED,
    default_repository,
    format_size,
    non_negative_float,
    positive_int,
)
from exporters.feast_options import add_feast_arguments, feast_options
from exporters.options import FP32_TOLERANCE, INT8_TOLERANCE, MAX_AUC_DROP


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
    parser.add_argument("model", type=Path, help="the ONNX file (skl2onnx, onnxmltools, tf2onnx, ...)")
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(default_repository()),
        help="model repository to publish <name>/<version>/ into (default: $HOTSERVE_MODEL_REPOSITORY or %(default)s)",
    )
    parser.add_argument(
        "--version",
        type=positive_int,
        default=None,
        help="version number (default: the next after the highest published); an existing version is never overwritten",
    )
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
        help="output the prediction histogram and metrics describe (default: the first floating-point output)",
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
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=positive_int, default=None)
    batching.add_argument("--max-queue-delay-ms", type=non_negative_float, default=None)
    batching.add_argument("--instances", type=positive_int, default=None, help="batches the server runs at once")


def run(args: argparse.Namespace) -> int:
    from exporters.errors import ExportError, MetricRegression, ParityError
    from exporters.import_options import ImportOptions
    from exporters.importer import import_model

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
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
            optimize=args.optimize,
            quantize=args.quantize,
            tolerance=args.tolerance,
            reduced_tolerance=args.reduced_tolerance,
            max_auc_drop=args.max_auc_drop,
            max_batch_size=args.max_batch_size,
            max_queue_delay_ms=args.max_queue_delay_ms,
            instances=args.instances,
        )
        result = import_model(args.model, args.repository, options)
    except (ParityError, MetricRegression) as exc:
        print(f"hotserve import: REFUSED, the graph does not match the original file: {exc}", file=sys.stderr)
        return EXIT_PARITY
    except ExportError as exc:
        print(f"hotserve import: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED

    manifest = result.manifest
    source = manifest.imported_from
    producer = " ".join(p for p in (source.producer_name, source.producer_version) if p) if source else ""
    print(
        f"published {result.version_dir} from {result.source} ({producer or 'unknown producer'}) "
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
    for note in result.notes:
        print(f"  note: {note}")
    return 0
