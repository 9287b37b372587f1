"""Whether a stored release record may be driven (control path): its step follows from its schedule
and from the record this replica last saw of the same release.

Signing (`store.py`) stops records written without the fleet's key; this stops the rest: a signed
record replayed from earlier (an older seq, a finished release made running again), one whose step
went backwards or skipped a step no gate passed, or whose history was rewritten. The driver refuses
such a record (nothing applied, reported like a forged one) and keeps the last one it trusted.
"""

from __future__ import annotations

from server.release.gates import Verdict
from server.release.record import ReleaseRecord, schedule


def schedule_problem(record: ReleaseRecord) -> str | None:
    """Why `record` cannot be where it says in its schedule, or None: its step is within the
    schedule and every step before it passed, in order, with a passing decision."""
    steps = schedule(record.policy)
    if not 0 <= record.step <= len(steps):
        return f"is at step {record.step} of a {len(steps)}-step schedule"
    if len(record.history) != record.step:
        return f"is at step {record.step} with {len(record.history)} steps passed"
    for index, result in enumerate(record.history):
        if result.step != steps[index]:
            return f"passed {result.step.label} where its schedule has {steps[index].label}"
        if result.decision is None or result.decision.verdict is not Verdict.PASS:
            return f"moved past {result.step.label} without a passing decision"
    if record.state == "promoted" and record.step != len(steps):
        return f"is promoted at step {record.step} of {len(steps)}"
    if record.version == record.baseline:
        return "releases the version it started from"
    return None


def transition_problem(known: ReleaseRecord | None, record: ReleaseRecord) -> str | None:
    """Why `record` cannot follow `known` (the last record of the model this replica stored or
    trusted), or None. A record of another release is judged on its schedule alone."""
    problem = schedule_problem(record)
    if problem is not None or known is None or known.id != record.id:
        return problem
    if record.seq < known.seq:
        return f"goes back to seq {record.seq} (this replica saw seq {known.seq})"
    if record.seq == known.seq and record != known:
        return f"changed without a new seq ({record.seq})"
    if record.step < known.step:
        return f"goes back to step {record.step} (this replica saw step {known.step})"
    if record.history[: len(known.history)] != known.history:
        return "rewrites the steps already passed"
    if known.finished and record != known:
        return f"changes a release that ended {known.state}"
    started = ("created_by", "created_at", "policy", "version", "baseline")
    if any(getattr(known, name) != getattr(record, name) for name in started):
        return "changes who started the release, when, what it releases or its policy"
    return None
