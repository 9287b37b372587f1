"""`ReleasePolicy`: the schedule of a release and the bounds of its gates (control path).

Read from a YAML file (`hotserve release --policy FILE`) or the admin API's JSON body; every
field has a default, so a release with no policy runs a sensible schedule: shadow at half the
traffic for a bake time, then canary weights 5 -> 25 -> 50, each held for a bake time and until
the minimum samples are reached, then promote.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from server.release.label_bounds import LabelGateBounds
from server.release.policy_errors import explain


class GateBounds(BaseModel):
    """What the candidate must show against production over the same window.

    Every gate is judged on confidence sequences on every tick of the driver (`gates.py`): with
    `false_alarm` split over 5 gates (label_loss included) x the steps (Bonferroni,
    `gates.gate_alpha`), a candidate within every bound is rolled back with probability at most
    `false_alarm` over the whole release (default schedule: 20 gate-steps, 0.0005 each). Per gate, under its null:
    - error_rate: fails when the candidate's lower bound exceeds `max_error_ratio` x
      production's upper bound + `error_rate_slack`: P(false fail) <= alpha per step;
    - p99_ratio: fails when the candidate's p99 lower bound exceeds `max_p99_ratio` x
      production's p99 upper bound (histogram edges, conservative): <= alpha per canary step;
    - agreement: fails when its upper bound is below `min_agreement`: <= alpha per step; it also
      passes only when its lower bound reaches it (a worse candidate passes with <= alpha);
    - psi: fails when a lower bound of the PSI exceeds `max_psi`: <= alpha per step.
    A regression gate (error_rate, p99_ratio, psi) passes once the step has its minimum samples
    and no failure; with fewer it is inconclusive, never a pass.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    false_alarm: float = Field(default=0.01, gt=0.0, lt=1.0)
    """Largest probability that a candidate within every bound is rolled back, over the whole
    release however often its gates are looked at."""
    min_requests: PositiveInt = 200
    """Answered requests each side needs before the error and distribution gates can pass."""
    max_error_ratio: float = Field(default=2.0, gt=0.0)
    """Candidate error rate at most this times production's, plus `error_rate_slack`."""
    error_rate_slack: float = Field(default=0.005, ge=0.0)
    """Absolute error rate allowed above the ratio (production with no errors still allows a few)."""
    min_latency_samples: PositiveInt = 2000
    """Answers each side needs before the p99 gate can pass. A p99 needs thousands: at the default
    alpha both p99s are bounded only from ~1,440 answers, and at 2,000 a side the gate fails a
    candidate whose p99 is above ~2.3x production's (lognormal tail, sigma 0.52; 1.7x at 5,000,
    1.5x at 20,000), so passing means no regression that large."""
    max_p99_ratio: float = Field(default=1.3, gt=0.0)
    """Candidate p99 latency at most this times production's."""
    min_agreement: float = Field(default=0.99, gt=0.0, le=1.0)
    """Share of compared requests with the same answer; passes once its lower confidence bound
    reaches it."""
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    """Decision threshold: agreement means the same decision at it; None: by the models' task
    (binary: each version's recorded threshold; see `server/routing/agreement.py`)."""
    tolerance: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """Largest absolute difference still counted as agreement (target units for regression);
    None: by the models' task (regression: the recorded tolerance; multiclass: the same label)."""
    max_psi: float = Field(default=0.1, gt=0.0)
    """Population stability index of the candidate's predictions against production's (its lower
    confidence bound must exceed it to fail)."""


class RegistryTarget(BaseModel):
    """The MLflow Model Registry alias a promotion moves (`hotserve release --registry-alias`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str = Field(pattern=r"^[A-Za-z0-9_-]{1,255}$")
    """MLflow's alias rules: letters, digits, `_` and `-`."""
    registered_model: str | None = Field(default=None, min_length=1)
    """The registered model; by default the one the version was imported from (`models:/...`)."""

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, alias: str) -> str:
        if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
            raise ValueError(f"{alias!r} is reserved by MLflow (latest, v<number>)")
        return alias


class ReleasePolicy(BaseModel):
    """A release's schedule, its gates, and what too little traffic by the deadline does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shadow_share: float = Field(default=0.5, gt=0.0, le=1.0)
    shadow_bake_s: float = Field(default=300.0, ge=0.0)
    canary_weights: tuple[int, ...] = (5, 25, 50)
    canary_bake_s: float = Field(default=300.0, ge=0.0)
    deadline_s: float = Field(default=3600.0, gt=0.0)
    """From the start: a step still short of evidence then ends the release as inconclusive."""
    on_inconclusive: Literal["rollback", "hold"] = "rollback"
    """`hold`: keep the current step's routing; `rollback`: clear weights and shadow."""
    gates: GateBounds = GateBounds()
    labels: LabelGateBounds = LabelGateBounds()
    """The label gate (`server/release/label_gate.py`): by default it fails a candidate clearly worse on
    the same labelled requests and never holds a release that has no labels."""
    registry: RegistryTarget | None = None
    """When set, the verdict is recorded in the MLflow Model Registry: every released version is
    tagged with it and its evidence, and a promotion moves the alias (a rollback leaves it)."""
    skip_gates: tuple[Literal["psi"], ...] = ()
    """Gates released without: a gate the two versions' evidence cannot judge (PSI with no
    prediction reference on one side, or on different bins) otherwise ends the release
    inconclusive rather than let it promote unjudged."""

    @model_validator(mode="after")
    def _weights(self) -> Self:
        if any(not 0 < w < 100 for w in self.canary_weights):
            raise ValueError("canary_weights must each be between 1 and 99 percent")
        if list(self.canary_weights) != sorted(self.canary_weights):
            raise ValueError("canary_weights must not decrease")
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> Self:
        """Raises ValueError with the reason for a file that is not a valid policy."""
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read release policy {path}: {error}") from error
        try:
            return cls.model_validate(doc or {})
        except ValidationError as error:
            raise ValueError(explain(error, cls, path)) from None
