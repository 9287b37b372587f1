"""What an export is asked to do: precision, checks and batching overrides, with their defaults.

Free of torch/onnx imports so `exporters/export/cli.py` can show the defaults in `--help`; the
checks' defaults, shared with `hotserve import`, are in `exporters/shared/checks.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from exporters.errors import ExportError
from exporters.shared.checks import (
    DEFAULT_OPSET,
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    INT8_TASK_TOLERANCE,
    MAX_ACCURACY_DROP,
    MAX_AUC_DROP,
    MAX_RMSE_INCREASE,
    MIN_OPSET,
)
from exporters.shared.feast_options import FeastOptions


@dataclass(frozen=True)
class ExportOptions:
    """What `hotserve export` was asked to do beyond the plain fp32 export."""

    version: int | None = None
    """Repository version to publish; None: the checkpoint's number."""
    next_free_when_taken: bool = False
    """With no `version`: publish as the next free version when the checkpoint's number is
    already a published version (`hotserve export`'s default), instead of refusing."""
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
    # feature view (models with stored features); see exporters/export/feature_view.py
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
    decision_threshold: float | None = None
    """Binary: the recorded decision threshold; None: 0.5."""
    agreement_tolerance: float | None = None
    """Regression: the recorded agreement tolerance, in target units; None:
    `REGRESSION_AGREEMENT_STD` of the training target's standard deviation."""

    def __post_init__(self) -> None:
        if self.quantize is not None and self.fp16:
            raise ExportError("choose one of --quantize int8 and --fp16, not both")
        if self.version is not None and self.version < 1:
            raise ExportError(f"version must be >= 1, got {self.version}")
        if self.opset < MIN_OPSET:
            raise ExportError(f"opset {self.opset} is too old; use {MIN_OPSET} or newer")
        if self.feature_view_version is not None and self.feature_view_version < 1:
            raise ExportError(f"feature view version must be >= 1, got {self.feature_view_version}")
        if self.feature_max_age_s is not None and not self.feature_max_age_s > 0:
            raise ExportError(f"feature max age must be > 0 s, got {self.feature_max_age_s}")
        for name in (
            "tolerance",
            "reduced_tolerance",
            "max_auc_drop",
            "max_accuracy_drop",
            "max_rmse_increase",
            "agreement_tolerance",
        ):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ExportError(f"{name} must be >= 0, got {value}")
        if self.decision_threshold is not None and not math.isfinite(self.decision_threshold):
            raise ExportError(f"decision threshold must be a finite number, got {self.decision_threshold}")

    @property
    def reduced_stage(self) -> Literal["int8", "fp16"] | None:
        """The reduced-precision variant to publish, or None for the float graph."""
        return "fp16" if self.fp16 else self.quantize

    def reduced_tolerance_for(self, task: str) -> float:
        """The int8/fp16 graph's tolerance: as asked, else that precision's default for `task`."""
        if self.reduced_tolerance is not None:
            return self.reduced_tolerance
        return FP16_TOLERANCE if self.fp16 else INT8_TASK_TOLERANCE[task]
