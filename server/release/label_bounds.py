"""`LabelGateBounds`: what a release's label gate needs (a field of `ReleasePolicy`; the gate itself
is `label_gate.py`). Apart so the policy imports no statistics."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class LabelGateBounds(BaseModel):
    """Candidate against production on the same labelled requests (shadow copies' answers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: bool = False
    """False (default): labels can only fail a candidate that is clearly worse; with too few labels
    or an undecided bound the gate is reported as not judged and the other gates decide, so a
    release with no labels is never held by this gate. True: the release needs it to pass (too few
    labels, or an undecided bound, is inconclusive)."""
    min_pairs: PositiveInt = 200
    """Labelled requests answered by both versions before the gate judges."""
    max_loss_increase: float = Field(default=0.02, ge=0.0, le=1.0)
    """Non-inferiority margin: the candidate passes when its mean loss per request (the task's
    selection metric: cross-entropy, squared error) is at most (1 + this) x production's on the
    same requests, and fails when it is above that with confidence."""
