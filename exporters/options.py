"""What an export is asked to do: precision, checks and batching overrides, with their defaults.

Free of torch/onnx imports so `exporters/cli.py` can show the defaults in `--help`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from exporters.errors import ExportError
from exporters.feast_options import FeastOptions

FP32_TOLERANCE = 1e-4
"""Max |onnx - torch| for a full-precision graph: only kernel rounding differs. Differences are
in probability units, or in target standard deviations for regression models."""
FP16_TOLERANCE = 1e-2
"""Half precision keeps ~3 significant digits; judged mainly by the metric change."""
INT8_TOLERANCE = 5e-2
"""Dynamic int8 quantisation moves logits; judged mainly by the metric change."""
INT8_TASK_TOLERANCE = {"binary": INT8_TOLERANCE, "multiclass": 0.1, "regression": 0.5}
"""int8's worst held-out row by task, a bound on gross breakage rather than the verdict (the
metric change is): spread-out class probabilities and an unbounded regression output (here in
target standard deviations) move more than a rare-event probability near 0 does. Measured on
the demos: 0.07 (segments) and 0.24 std (delivery) for an RMSE change of +0.5%."""
MAX_AUC_DROP = 0.01
"""Largest AUC loss on the held-out rows a reduced-precision binary model may cause."""
MAX_ACCURACY_DROP = 0.01
"""Largest accuracy loss on the held-out rows a reduced-precision multiclass model may cause."""
MAX_RMSE_INCREASE = 0.02
"""Largest relative RMSE growth on the held-out rows a reduced-precision regression model may cause."""
DEFAULT_OPSET = 18
"""The torch exporter's native opset; lower ones go through the ONNX version converter."""
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportOptions:
    """What `hotserve export` was asked to do beyond the plain fp32 export."""

    optimize: bool = True
    quantize: Literal["int8"] | None = None
    fp16: bool = False
    tolerance: float = FP32_TOLERANCE
    """Max |onnx - torch| for the fp32 graphs."""
    reduced_tolerance: float | None = None
    """Max |onnx - torch| for the int8/fp16 graph; None: that precision's default."""
    max_auc_drop: float = MAX_AUC_DROP
    max_accuracy_drop: float = MAX_ACCURACY_DROP
    max_rmse_increase: float = MAX_RMSE_INCREASE
    opset: int = DEFAULT_OPSET
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    instances: int | None = None
    # feature view (models with stored features); see exporters/feature_view.py
    feature_view: str | None = None
    """View name; None: the checkpoint's (the model name)."""
    feature_view_version: int | None = None
    """None: kept while the stored data's shape is unchanged, bumped when it changes."""
    feature_max_age_s: float | None = None
    feature_defaults: Literal["required", "training-mean"] = "required"
    missing_entity: Literal["error", "defaults"] = "error"
    store_unavailable: Literal["error", "defaults"] = "error"
    request_overrides: tuple[str, ...] = ()
    """Stored features a request may override; ("all",) for every one."""
    feast: FeastOptions = field(default_factory=FeastOptions)
    """Stored features read from Feast's Redis online store (`--feast-*`)."""

    def __post_init__(self) -> None:
        if self.quantize is not None and self.fp16:
            raise ExportError("choose one of --quantize int8 and --fp16, not both")
        if self.opset < MIN_OPSET:
            raise ExportError(f"opset {self.opset} is too old; use {MIN_OPSET} or newer")
        if self.feature_view_version is not None and self.feature_view_version < 1:
            raise ExportError(f"feature view version must be >= 1, got {self.feature_view_version}")
        if self.feature_max_age_s is not None and not self.feature_max_age_s > 0:
            raise ExportError(f"feature max age must be > 0 s, got {self.feature_max_age_s}")
        for name in ("tolerance", "reduced_tolerance", "max_auc_drop", "max_accuracy_drop", "max_rmse_increase"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ExportError(f"{name} must be >= 0, got {value}")

    @property
    def reduced_stage(self) -> Literal["int8", "fp16"] | None:
        """The reduced-precision variant to publish, or None for the float graph."""
        return "fp16" if self.fp16 else self.quantize

    def reduced_tolerance_for(self, task: str) -> float:
        """The int8/fp16 graph's tolerance: as asked, else that precision's default for `task`."""
        if self.reduced_tolerance is not None:
            return self.reduced_tolerance
        return FP16_TOLERANCE if self.fp16 else INT8_TASK_TOLERANCE[task]
