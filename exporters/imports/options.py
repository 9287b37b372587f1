"""What an import is asked to do (`hotserve import`'s flags), with their defaults and consistency.

Free of onnx/pandas imports, like `export/options.py` for exports; `pipeline.import_model` reads it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from exporters.errors import ExportError
from exporters.shared.checks import FP32_TOLERANCE, INT8_TOLERANCE, MAX_AUC_DROP
from exporters.shared.feast_options import FeastOptions
from server.contract.manifest import MODEL_NAME_PATTERN, ModelManifest, RegistryModelRef, Task


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
    feast: FeastOptions = field(default_factory=FeastOptions)
    """The stored features are read from Feast's Redis online store (`--feast-*`)."""
    meta: Mapping[str, str] = field(default_factory=dict)
    registry: RegistryModelRef | None = None
    """The registry version the file was downloaded from (`hotserve import models:/...`)."""
    registered_manifest: ModelManifest | None = None
    """The model.json that version was registered with (`hotserve export --register`): its contract
    is carried over where the options do not set it (`registered_contract.py`)."""
    optimize: bool = True
    quantize: Literal["int8"] | None = None
    tolerance: float = FP32_TOLERANCE
    """Max |candidate - source| for float graphs (as imported, optimised)."""
    reduced_tolerance: float = INT8_TOLERANCE
    """Max |int8 - source| on floating-point outputs."""
    max_auc_drop: float = MAX_AUC_DROP
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    instances: int | None = None
    task: Task | None = None
    """What the model predicts (`--task`); None: the task its labelled reference table shows,
    else none is recorded."""
    decision_threshold: float | None = None
    """Binary: the recorded decision threshold; None: 0.5."""
    agreement_tolerance: float | None = None
    """Regression: the recorded agreement tolerance, in target units; None:
    `REGRESSION_AGREEMENT_STD` of the reference labels' (else predictions') standard deviation."""

    def __post_init__(self) -> None:
        if not re.match(MODEL_NAME_PATTERN, self.name):
            raise ExportError(
                f"model name {self.name!r} is not a valid repository folder name "
                f"(letters, digits, '_', '.', '-'; starting with a letter or digit)"
            )
        if not self.batch_axis and (self.reference is not None or self.max_batch_size is not None):
            raise ExportError(
                "--no-batch serves each request as one whole run: a reference table's "
                "rows and --max-batch-size do not apply"
            )
        if (self.features or self.label) and self.reference is None:
            raise ExportError("--features and --label describe the --reference table; give it")
        if self.prediction_output and self.reference is None and self.task is None:
            raise ExportError(
                "--prediction-output chooses what the --reference table's drift histogram describes, "
                "or with --task which output holds the prediction; give the table or --task"
            )
        for name in ("tolerance", "reduced_tolerance", "max_auc_drop"):
            if not getattr(self, name) >= 0:
                raise ExportError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.agreement_tolerance is not None and not self.agreement_tolerance >= 0:
            raise ExportError(f"agreement_tolerance must be >= 0, got {self.agreement_tolerance}")
        if self.decision_threshold is not None and not math.isfinite(self.decision_threshold):
            raise ExportError(f"decision threshold must be a finite number, got {self.decision_threshold}")
