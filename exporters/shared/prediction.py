"""What an exported or imported model's answer means (`model.json`'s `prediction`), for both pipelines.

The task comes from the checkpoint (export) or from `--task` / the labelled reference table
(import); a binary model's decision threshold is 0.5 unless `--decision-threshold` says; a
regression model's agreement tolerance is `REGRESSION_AGREEMENT_STD` of its target's standard
deviation unless `--agreement-tolerance` says. The server compares a shadow's answers by it.
"""

from __future__ import annotations

from pydantic import ValidationError

from exporters.errors import ExportError
from exporters.shared.checks import REGRESSION_AGREEMENT_STD
from server.contract.manifest import PredictionContract, Task


def prediction_contract(
    task: Task,
    output: str | None = None,
    decision_threshold: float | None = None,
    agreement_tolerance: float | None = None,
    target_std: float | None = None,
) -> PredictionContract:
    """The contract for `task`; ExportError when an option does not fit the task, or when a
    regression model has neither a tolerance nor a target spread (`target_std`) to derive it from.
    `output`: the prediction output, when the drift reference does not name it."""
    if decision_threshold is not None and task != "binary":
        raise ExportError(f"--decision-threshold is for binary models; this one is {task}")
    if agreement_tolerance is not None and task != "regression":
        raise ExportError(f"--agreement-tolerance is for regression models; this one is {task}")
    if task == "regression" and agreement_tolerance is None:
        if target_std is None:
            raise ExportError(
                "a regression model records the tolerance its shadows are compared by: give "
                "--agreement-tolerance (target units), or a --reference table to derive it from"
            )
        agreement_tolerance = REGRESSION_AGREEMENT_STD * target_std
    try:
        return PredictionContract(
            task=task, output=output, decision_threshold=decision_threshold, agreement_tolerance=agreement_tolerance
        )
    except ValidationError as exc:
        raise ExportError(f"prediction contract: {exc.errors()[0]['msg']}") from exc


def describe(contract: PredictionContract, output: str) -> str:
    """One line for the command's summary: what was recorded and what a shadow is compared by."""
    if contract.task == "binary":
        rule = f"decision threshold {contract.decision_threshold:g} (shadow agreement: the same decision)"
    elif contract.task == "multiclass":
        rule = "shadow agreement: the same label"
    else:
        rule = f"shadow agreement: within {contract.agreement_tolerance:.4g} target units"
    return f"prediction: {contract.task}, output {output!r}, {rule}"
