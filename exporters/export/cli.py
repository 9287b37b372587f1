"""`hotserve export`: the command line over `exporters.export.pipeline.export_checkpoint`.

Imported when the `hotserve` parser is built, so torch and onnx are imported only in `run`.
Exit codes: 0 published; 1 refused (checkpoint unusable, version exists, export failed);
3 the model failed its parity or metric check.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exporters.shared import cli_args
from exporters.shared.checks import (
    DEFAULT_OPSET,
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    INT8_TASK_TOLERANCE,
    MAX_ACCURACY_DROP,
    MAX_AUC_DROP,
    MAX_RMSE_INCREASE,
    MIN_OPSET,
    REGRESSION_AGREEMENT_STD,
)
from exporters.shared.cli_args import finite_float, format_size, non_negative_float, positive_int
from exporters.shared.feast_options import add_feast_arguments, feast_options
from exporters.shared.prediction import describe
from server.contract.manifest import DEFAULT_DECISION_THRESHOLD, ONNX_FILENAME

if TYPE_CHECKING:
    from exporters.export.pipeline import ExportResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="a checkpoint version folder (checkpoints/fraud/3) or a model folder "
        "(checkpoints/fraud: its latest version)",
    )
    cli_args.add_destination(
        parser, "model", "the checkpoint's number, or the next free one when a version of that number exists"
    )
    parser.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="skip the offline onnxruntime graph optimisation (basic level)",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--quantize", choices=["int8"], help="dynamic int8 quantisation (CPU targets); records metric deltas"
    )
    precision.add_argument(
        "--fp16", action="store_true", help="float16 weights and compute for GPU targets; inputs/outputs stay FP32"
    )
    parser.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=FP32_TOLERANCE,
        help="max |onnx - torch| for fp32 graphs, in probability units or, for regression, "
        "target standard deviations (default %(default)s)",
    )
    parser.add_argument(
        "--reduced-tolerance",
        type=non_negative_float,
        default=None,
        help="max |onnx - torch| for the int8/fp16 graph "
        f"(default {FP16_TOLERANCE} fp16; int8 by task: "
        f"{', '.join(f'{k} {v}' for k, v in INT8_TASK_TOLERANCE.items())})",
    )
    parser.add_argument(
        "--max-auc-drop",
        type=non_negative_float,
        default=MAX_AUC_DROP,
        help="binary: largest AUC loss an int8/fp16 model may cause on the held-out rows (default %(default)s)",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=non_negative_float,
        default=MAX_ACCURACY_DROP,
        help="multiclass: largest accuracy loss an int8/fp16 model may cause (default %(default)s)",
    )
    parser.add_argument(
        "--max-rmse-increase",
        type=non_negative_float,
        default=MAX_RMSE_INCREASE,
        help="regression: largest relative RMSE growth an int8/fp16 model may cause (default %(default)s, i.e. 2%%)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default %(default)s, at least {MIN_OPSET})"
    )
    cli_args.add_batching(parser, "architecture's")
    meaning = parser.add_argument_group("prediction (what a shadow of this version is compared by)")
    meaning.add_argument(
        "--decision-threshold",
        type=finite_float,
        default=None,
        help=f"binary: the score at or above which a row is positive (default {DEFAULT_DECISION_THRESHOLD}); "
        "a shadow agrees when it makes the same decision",
    )
    meaning.add_argument(
        "--agreement-tolerance",
        type=non_negative_float,
        default=None,
        help="regression: answers this close, in target units, are the same answer "
        f"(default {REGRESSION_AGREEMENT_STD} x the training target's standard deviation)",
    )
    parser.add_argument(
        "--register",
        metavar="NAME",
        help="also register the published graph in the MLflow Model Registry as a new version of NAME "
        "(MLFLOW_TRACKING_URI; the `mlflow` extra), logged to the training's MLflow run",
    )
    view = parser.add_argument_group("feature view (models with stored features)")
    view.add_argument(
        "--feature-view",
        default=None,
        help="name of the feature view the stored features are looked up in (default: the model name)",
    )
    view.add_argument(
        "--feature-view-version",
        type=positive_int,
        default=None,
        help="view version (default: kept while the stored features' names and types "
        "are unchanged, bumped when they change)",
    )
    view.add_argument(
        "--feature-max-age-s",
        type=float,
        default=None,
        help="stored values older than this count as missing (default: no limit)",
    )
    view.add_argument(
        "--feature-defaults",
        choices=["required", "training-mean"],
        default="required",
        help="what stands in for a missing stored value: nothing (an error) or the "
        "training data's mean (default %(default)s)",
    )
    view.add_argument(
        "--missing-entity",
        choices=["error", "defaults"],
        default="error",
        help="an entity without stored values: 404, or the defaults (default %(default)s)",
    )
    view.add_argument(
        "--store-unavailable",
        choices=["error", "defaults"],
        default="error",
        help="feature store down: 503, or the defaults (default %(default)s)",
    )
    view.add_argument(
        "--request-overrides", default="", help="comma-separated stored features a request may override, or 'all'"
    )
    add_feast_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from exporters.export.options import ExportOptions
    from exporters.export.pipeline import export_checkpoint

    # Progress from this package only; torch/onnxscript/quantiser INFO chatter stays hidden.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("exporters").setLevel(logging.INFO)

    def publish() -> ExportResult:
        options = ExportOptions(
            version=args.version,
            next_free_when_taken=True,
            optimize=args.optimize,
            quantize=args.quantize,
            fp16=args.fp16,
            reduced_tolerance=args.reduced_tolerance,
            max_batch_size=args.max_batch_size,
            max_queue_delay_ms=args.max_queue_delay_ms,
            instances=args.instances,
            tolerance=args.tolerance,
            max_auc_drop=args.max_auc_drop,
            max_accuracy_drop=args.max_accuracy_drop,
            max_rmse_increase=args.max_rmse_increase,
            opset=args.opset,
            feature_view=args.feature_view,
            feature_view_version=args.feature_view_version,
            feature_max_age_s=args.feature_max_age_s,
            feature_defaults=args.feature_defaults,
            missing_entity=args.missing_entity,
            store_unavailable=args.store_unavailable,
            request_overrides=tuple(n.strip() for n in args.request_overrides.split(",") if n.strip()),
            feast=feast_options(args),
            decision_threshold=args.decision_threshold,
            agreement_tolerance=args.agreement_tolerance,
        )
        return export_checkpoint(args.checkpoint, args.repository, options)

    result = cli_args.run_pipeline("export", "model does not match its checkpoint", publish)
    if isinstance(result, int):
        return result

    export = result.manifest.export
    print(f"published {result.version_dir} from {result.checkpoint} in {result.seconds:.1f} s")
    for report in result.parity:
        unit = "" if report.scale == 1.0 else f" target std ({report.scale:.4g})"
        ties = f", {report.near_ties} near-tie labels differ" if report.near_ties else ""
        print(
            f"  parity {report.stage}: max |onnx - torch| = {report.max_abs_diff:.3g}{unit} "
            f"(tolerance {report.tolerance:.3g}, {report.rows} rows{ties})"
        )
    if export is not None and export.metric_deltas:
        deltas = ", ".join(f"{name} {value:+.4f}" for name, value in export.metric_deltas.items())
        print(f"  metric change vs float model: {deltas}")
    print(
        f"  model.onnx {format_size(result.model_size_bytes)} "
        f"(float graph {format_size(result.float_size_bytes)}), "
        f"sha256 {result.manifest.onnx_sha256}"
    )
    if result.manifest.prediction is not None:
        print(f"  {describe(result.manifest.prediction, result.manifest.prediction_output)}")
    features = result.manifest.features
    if features is not None and features.view is not None:
        view = features.view
        where = (
            f"keys {view.key_prefix}<entity>"
            if view.feast is None
            else f"read from Feast project {view.feast.project!r}, views {view.feast.feature_views}"
        )
        print(
            f"  feature view {view.label}: {len(view.features)} stored features by "
            f"{view.entity_key} ({view.entity_key_type}); {where}"
        )
    for note in result.notes:
        print(f"  note: {note}")
    if args.register:
        return _register(result, args.register)
    return 0


def _register(result: ExportResult, name: str) -> int:
    """Register the published graph in MLflow; the version stays published if that fails (exit 1, said)."""
    from exporters.shared.mlflow_registry import RegistryError, example_inputs, register_version

    try:
        registered = register_version(
            result.version_dir / ONNX_FILENAME, result.manifest, name, example_inputs(result.manifest)
        )
    except RegistryError as exc:
        print(f"hotserve export: error: published {result.version_dir}, but NOT registered: {exc}", file=sys.stderr)
        return cli_args.EXIT_REFUSED
    print(f"  registered {registered.name} version {registered.version} in MLflow (run {registered.run_id})")
    return 0
