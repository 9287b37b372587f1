"""What a model predicts (`Task`) and what that makes its outputs; torch-free, read by the CLI, trainer and exporters.

binary: one sigmoid `probability` per row, labels 0/1. multiclass: softmax `probabilities`
over K classes and the predicted class as `label` (its class name; the exporter maps the
index to names in the graph). regression: one `prediction` per row, in the label's units.
"""

from __future__ import annotations

from typing import Literal, get_args

from server.contract.manifest import Datatype, TensorSpec

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = get_args(Task)

ClassNames = list[int] | list[str]
"""A multiclass model's classes in output order: integers when every label was one, else strings."""

SELECTION_METRIC: dict[Task, str] = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}
"""The validation metric (lower is better) that picks the best epoch and drives early stopping."""

SCORE_OUTPUT: dict[Task, str] = {"binary": "probability", "multiclass": "probabilities", "regression": "prediction"}
"""The output metrics are computed from (the first output), and drift's prediction reference describes."""
LABEL_OUTPUT = "label"


def label_datatype(classes: ClassNames) -> Datatype:
    """`label` carries the class names as they were in the data: INT64 for integers, BYTES for text."""
    return "INT64" if all(isinstance(c, int) for c in classes) else "BYTES"


def output_specs(task: Task, classes: ClassNames | None = None) -> list[TensorSpec]:
    """The exported graph's outputs for `task` (multiclass needs its classes)."""
    score = SCORE_OUTPUT[task]
    if task != "multiclass":
        return [TensorSpec(name=score, datatype="FP32", shape=[-1])]
    if not classes or len(classes) < 2:
        raise ValueError(f"a multiclass model needs at least 2 classes, got {classes}")
    return [
        TensorSpec(name=score, datatype="FP32", shape=[-1, len(classes)]),
        TensorSpec(name=LABEL_OUTPUT, datatype=label_datatype(classes), shape=[-1]),
    ]


def body_outputs(task: Task, classes: ClassNames | None = None) -> int:
    """Values the network body emits per row: one logit or value, or one logit per class."""
    return len(classes or ()) if task == "multiclass" else 1
