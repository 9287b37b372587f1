"""`ReleaseRecord`: a release as stored server-side, and its schedule of steps (control path).

The record is the whole state of a release: the driving replica reads it, does the next step
and stores it back (compare-and-set on `seq`), so a replica taking over continues from the
stored step. Every routing change a step makes is idempotent (setting what is already set is a
no-op), so a step redone after a crash between the change and the store changes nothing twice.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from server.release.gates import Decision
from server.release.policy import ReleasePolicy

State = Literal["running", "promoted", "rolled_back", "inconclusive", "aborted"]
FINISHED: frozenset[str] = frozenset({"promoted", "rolled_back", "inconclusive", "aborted"})


class Step(BaseModel):
    """One step of the schedule: the shadow, or a canary weight (percent of unpinned requests)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["shadow", "canary"]
    weight: int | None = None

    @property
    def label(self) -> str:
        return "shadow" if self.weight is None else f"canary {self.weight}%"


def schedule(policy: ReleasePolicy) -> tuple[Step, ...]:
    return (Step(kind="shadow"), *(Step(kind="canary", weight=w) for w in policy.canary_weights))


class StepResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    step: Step
    started_at: float
    ended_at: float
    decision: Decision | None


class RegistryUpdate(BaseModel):
    """What the release did in the model registry at its verdict (`policy.registry`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str
    tracking_uri: str
    """The registry's server, without credentials."""
    registered_model: str | None = None
    registered_version: str | None = None
    tagged: bool = False
    """The registered version carries the verdict and its evidence as tags."""
    alias_moved: bool = False
    """The alias names the registered version (promoted releases only)."""
    error: str | None = None
    """Why it could not be done; the verdict stands either way."""


class ReleaseRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    model: str
    version: int
    baseline: int
    """The production version when the release started: what stays if it fails."""
    policy: ReleasePolicy
    created_by: str
    created_at: float
    state: State = "running"
    step: int = 0
    """Index into `schedule(policy)` of the current step."""
    step_started_at: float | None = None
    """None until the current step's routing is applied."""
    last_decision: Decision | None = None
    """The current step's latest evaluation (live progress)."""
    history: tuple[StepResult, ...] = ()
    abort_requested: bool = False
    detail: str | None = None
    finished_at: float | None = None
    registry: RegistryUpdate | None = None
    """Set at the verdict when the policy names a registry alias."""
    forced: tuple[str, ...] = ()
    """How the candidate cannot answer what production answers, when the operator started the
    release anyway (`force`; see `compatibility.py`)."""
    unjudgeable: dict[str, str] = {}
    """Gate -> why the two versions' evidence cannot judge it (found at start, not skipped by
    the policy): the release ends inconclusive at its first decision, never promoted."""
    driver: str | None = None
    """The replica that stored this revision."""
    seq: int = 0
    """Bumped by every store; a store expecting another `seq` is refused."""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def current(self) -> Step | None:
        steps = schedule(self.policy)
        return steps[self.step] if self.step < len(steps) else None
