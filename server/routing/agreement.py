"""When a shadow's answer agrees with the primary's: the rule, resolved once per routing build
(control path, the "decide" half; `server/shadow.py` applies it to each copy).

The shadow policy (admin API, a release's shadow step, the control document) may say how to
compare: a `threshold` (the same decision at it) or a `tolerance` (every value within it).
Whatever it leaves unset comes from the models' prediction contracts (`model.json`'s
`prediction`): binary, each version's decision at its own recorded decision threshold;
multiclass, the same label; regression, within the recorded tolerance, in target units; each
on the prediction output only. Versions that record no task are compared as before the
contract existed: every output within `LEGACY_TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from server.contract.manifest import ModelManifest

LEGACY_TOLERANCE = 1e-4
"""Agreement of versions whose `model.json` records no task and a policy that names no rule."""

AgreementKind = Literal["tolerance", "decision", "label"]
AgreementSource = Literal["policy", "model", "default"]


@dataclass(frozen=True, slots=True)
class Agreement:
    """What counts as the same answer from the shadow as from the primary."""

    kind: AgreementKind = "tolerance"
    """tolerance: every compared value within `tolerance`; decision: the same side of the
    threshold, row by row; label: the same class, row by row."""
    tolerance: float = LEGACY_TOLERANCE
    threshold: float | None = None
    """decision: the primary's threshold."""
    shadow_threshold: float | None = None
    """decision: the shadow's threshold (its own model's; the primary's unless they differ)."""
    output: str | None = None
    """The output compared; None: every output (versions without a prediction contract)."""
    source: AgreementSource = "default"
    """Where the rule came from: the shadow policy, the models' prediction contracts, or the
    fallback for versions that record no task."""
    task: str | None = None
    """The models' task, when their contracts name it."""

    def describe(self) -> str:
        """One line for operators: `same decision at threshold 0.5 on 'score' (binary, from model.json)`."""
        where = "every output" if self.output is None else repr(self.output)
        if self.kind == "decision":
            if self.shadow_threshold is not None and self.shadow_threshold != self.threshold:
                rule = f"same decision (production at {self.threshold:g}, shadow at {self.shadow_threshold:g})"
            else:
                rule = f"same decision at threshold {self.threshold:g}"
        elif self.kind == "label":
            rule = "same label"
        else:
            rule = f"within {self.tolerance:g}"
        origin = {
            "policy": "as the shadow policy asks",
            "model": f"{self.task}, from model.json",
            "default": "no task in model.json",
        }[self.source]
        return f"{rule} on {where} ({origin})"

    def view(self) -> dict[str, Any]:
        """The applied rule, as the admin API shows it."""
        return {
            "rule": self.kind,
            "tolerance": self.tolerance if self.kind == "tolerance" else None,
            "threshold": self.threshold,
            "shadow_threshold": self.shadow_threshold,
            "output": self.output,
            "task": self.task,
            "source": self.source,
            "text": self.describe(),
        }


def resolve_agreement(
    tolerance: float | None,
    threshold: float | None,
    shadow: ModelManifest,
    primary: ModelManifest | None,
) -> tuple[Agreement, tuple[str, ...]]:
    """The rule for comparing `shadow`'s answers with `primary`'s (production's; None when no
    version serves), and what an operator should be told about it.

    An explicit `threshold` wins, then an explicit `tolerance`; either is applied to the
    prediction output when a contract names one. Otherwise the rule follows the task both
    contracts share (the shadow's alone when the primary records none, and the other way round).
    """
    mine, theirs = shadow.prediction, primary.prediction if primary is not None else None
    contract = mine or theirs
    task = contract.task if contract is not None else None
    output = None
    if contract is not None:
        output = (shadow if mine is not None else primary or shadow).prediction_output
    if threshold is not None:
        return Agreement(
            "decision", threshold=threshold, shadow_threshold=threshold, output=output, source="policy", task=task
        ), ()
    if tolerance is not None:
        return Agreement("tolerance", tolerance=tolerance, output=output, source="policy", task=task), ()
    if contract is None:
        return Agreement(), ()
    if mine is not None and theirs is not None and mine.task != theirs.task:
        return Agreement(), (
            f"shadow version {shadow.version} is a {mine.task} model and production a {theirs.task} one: "
            f"agreement falls back to every output within {LEGACY_TOLERANCE:g}; set the shadow's tolerance or threshold",
        )
    notes: tuple[str, ...] = ()
    if primary is not None and output not in {o.name for o in primary.outputs}:
        notes = (
            f"shadow version {shadow.version}'s prediction output {output!r} is not an output of "
            f"production version {primary.version}: every comparison disagrees",
        )
    if contract.task == "binary":
        return Agreement(
            "decision",
            threshold=(theirs or contract).decision_threshold,
            shadow_threshold=(mine or contract).decision_threshold,
            output=output,
            source="model",
            task=task,
        ), notes
    if contract.task == "multiclass":
        return Agreement("label", output=output, source="model", task=task), notes
    tolerance = contract.agreement_tolerance if contract.agreement_tolerance is not None else LEGACY_TOLERANCE
    return Agreement("tolerance", tolerance=tolerance, output=output, source="model", task=task), notes
