"""Why an export stopped: facts for the `hotserve export` user, no tracebacks needed."""

from __future__ import annotations

from pathlib import Path


class ExportError(Exception):
    """Base of every failure `hotserve export` reports on purpose."""


class CheckpointUnusable(ExportError):
    """The checkpoint to export is missing, unreadable or inconsistent."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"checkpoint {path}: {reason}")
        self.path = path
        self.reason = reason


class VersionExists(ExportError):
    """The repository already holds this model version; versions are never overwritten."""

    def __init__(
        self,
        version_dir: Path,
        advice: str = "give --version N to publish the checkpoint as another version, or export into another repository",
    ) -> None:
        super().__init__(f"{version_dir} already exists; a published version is never overwritten ({advice})")
        self.version_dir = version_dir


class SignatureMismatch(ExportError):
    """The ONNX graph's inputs/outputs differ from the checkpoint's declared signature."""

    def __init__(self, what: str, expected: object, got: object) -> None:
        super().__init__(f"ONNX {what}: expected {expected}, got {got}")
        self.what = what
        self.expected = expected
        self.got = got


class ParityError(ExportError):
    """The ONNX model's outputs stray from PyTorch's by more than the tolerance."""

    def __init__(
        self,
        stage: str,
        max_abs_diff: float,
        tolerance: float,
        rows: int,
        worst_row: int,
        against: str = "PyTorch",
        measure: str | None = None,
    ) -> None:
        reference, rows_kind = ("torch", "held-out") if against == "PyTorch" else (against, "check")
        super().__init__(
            f"parity check failed for the {stage} model: {measure or f'max |onnx - {reference}|'} = "
            f"{max_abs_diff:.3g} over {rows} {rows_kind} rows (worst row {worst_row}) exceeds "
            f"tolerance {tolerance:.3g}"
        )
        self.stage = stage
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        self.rows = rows
        self.worst_row = worst_row


class MetricRegression(ExportError):
    """A reduced-precision model loses more of a metric than allowed."""

    def __init__(
        self, stage: str, metric: str, float_value: float, reduced_value: float, max_drop: float, relative: bool = False
    ) -> None:
        change = (
            f"an increase of {reduced_value / float_value - 1.0:.2%} exceeds the allowed {max_drop:.2%}"
            if relative
            else f"a drop of {float_value - reduced_value:.4f} exceeds the allowed {max_drop:.4f}"
        )
        super().__init__(
            f"{stage} model {metric} = {reduced_value:.4f} vs {float_value:.4f} for the float "
            f"model on the held-out rows: {change}"
        )
        self.stage = stage
        self.metric = metric
        self.float_value = float_value
        self.reduced_value = reduced_value
        self.max_drop = max_drop


class ModelRefused(ExportError):
    """`hotserve import`: the ONNX file cannot be served as it is; the message says what to change."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason
