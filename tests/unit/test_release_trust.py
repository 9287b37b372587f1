"""A release record is driven only where it follows from its schedule and from the last record of
its release this replica saw: a step jump or a replayed record is refused, reported once (metric,
audit by the refusing replica) and nothing of it is applied. Refusals of a kind reach the audit
log at a bounded rate."""

from __future__ import annotations

import json
from pathlib import Path

from fakes import ManualClock

from server.metrics.instruments import Metrics
from server.registry.audit import FileAuditLog
from server.registry.refusals import AUDIT_BURST, AUDIT_WINDOW_S, RecordedRefusals
from server.release.gates import Decision, Verdict
from server.release.record import ReleaseRecord, StepResult, schedule
from server.release.transitions import schedule_problem, transition_problem
from test_release_driver import POLICY, Harness


def rejected(h: Harness, document: str = "release") -> float | None:
    return h.metrics.registry.get_sample_value("hotserve_control_document_rejected_total", {"document": document})


def write_by_hand(h: Harness, record: ReleaseRecord) -> None:
    """As anything that can write the store's file could (no compare-and-set, any seq)."""
    Path(h.store.location(record.model)).write_text(record.model_dump_json())


def started(clock_now: float, **update: object) -> ReleaseRecord:
    record = ReleaseRecord(
        id="r1", model="fraud", version=2, baseline=1, policy=POLICY, created_by="ci", created_at=clock_now, seq=1
    )
    return record.model_copy(update=update)


def passed(step_index: int) -> StepResult:
    return StepResult(
        step=schedule(POLICY)[step_index],
        started_at=0.0,
        ended_at=1.0,
        decision=Decision(verdict=Verdict.PASS, gates=()),
    )


async def test_a_record_past_its_schedule_without_passed_steps_is_refused_and_never_promoted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    jumped = started(h.clock(), step=len(schedule(POLICY)), created_by="mallory")
    write_by_hand(h, jumped)
    await h.driver.tick()
    await h.driver.tick()
    assert h.control.calls == []  # no promotion, no routing change at all
    assert await h.store.get("fraud") == jumped
    assert rejected(h) == 1.0  # once, however often it is read
    entries = await h.audit.read()
    assert [(e.who, e.action, e.result) for e in entries] == [("replica:replica-a", "release", "refused")]
    assert "is at step 2 with 0 steps passed" in (entries[0].detail or "")
    sample = h.metrics.registry.get_sample_value
    assert sample("hotserve_control_document_verified", {"document": "release"}) == 0.0


async def test_a_replayed_earlier_record_of_the_release_is_refused(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    first = await h.state()
    await h.driver.tick()  # applies the shadow: seq 2
    assert h.control.calls == [("shadow", 2)]
    write_by_hand(h, first)  # the record as it was at seq 1, replayed
    await h.driver.tick()
    assert h.control.calls == [("shadow", 2)]  # not applied again
    assert rejected(h) == 1.0
    (entry,) = [e for e in await h.audit.read() if e.result == "refused"]
    assert "goes back to seq 1 (this replica saw seq 2)" in (entry.detail or "")


async def test_a_release_that_follows_its_schedule_is_trusted_and_clears_the_refusal(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    good = await h.state()
    write_by_hand(h, good.model_copy(update={"step": 1}))  # skipped the shadow: refused
    await h.driver.tick()
    write_by_hand(h, good)  # the remedy: the record as it was
    await h.driver.tick()
    assert h.control.calls == [("shadow", 2)]
    sample = h.metrics.registry.get_sample_value
    assert sample("hotserve_control_document_verified", {"document": "release"}) == 1.0


def test_the_schedule_check_names_what_does_not_follow() -> None:
    assert schedule_problem(started(0.0)) is None
    assert schedule_problem(started(0.0, step=1, history=(passed(0),))) is None
    assert schedule_problem(started(0.0, step=2, history=(passed(0), passed(1)))) is None  # promotes next
    assert schedule_problem(started(0.0, step=3)) == "is at step 3 of a 2-step schedule"
    failed = passed(0).model_copy(update={"decision": Decision(verdict=Verdict.FAIL, gates=())})
    assert schedule_problem(started(0.0, step=1, history=(failed,))) == "moved past shadow without a passing decision"
    assert schedule_problem(started(0.0, step=1, history=(passed(1),))) == (
        "passed canary 50% where its schedule has shadow"
    )
    assert schedule_problem(started(0.0, state="promoted")) == "is promoted at step 0 of 2"


def test_a_transition_goes_forward_from_the_record_last_seen() -> None:
    known = started(0.0, step=1, history=(passed(0),), seq=5)
    assert transition_problem(known, known) is None
    assert transition_problem(known, known.model_copy(update={"seq": 6, "abort_requested": True})) is None
    assert transition_problem(known, known.model_copy(update={"seq": 4})) == (
        "goes back to seq 4 (this replica saw seq 5)"
    )
    assert transition_problem(known, known.model_copy(update={"seq": 6, "created_by": "mallory"})) == (
        "changes who started the release, when, what it releases or its policy"
    )
    assert transition_problem(known, known.model_copy(update={"step": 0, "history": (), "seq": 6})) == (
        "goes back to step 0 (this replica saw step 1)"
    )
    ended = known.model_copy(update={"state": "rolled_back"})
    assert transition_problem(ended, ended.model_copy(update={"state": "running", "seq": 6})) == (
        "changes a release that ended rolled_back"
    )
    other = started(0.0).model_copy(update={"id": "r2", "seq": 1})
    assert transition_problem(known, other) is None  # another release: judged on its schedule alone


async def test_a_flood_of_refused_documents_reaches_the_audit_log_at_a_bounded_rate(tmp_path: Path) -> None:
    clock = ManualClock()
    metrics = Metrics()
    audit = FileAuditLog(tmp_path / "audit.jsonl")
    refusals = RecordedRefusals(metrics, audit, "replica-a", clock=clock)
    for revision in range(100):  # a new forged revision each time
        for _ in range(2):
            await refusals.refused("control", "hotserve:control", f"print-{revision}", "forged", revision=revision)
    sample = metrics.registry.get_sample_value
    assert sample("hotserve_control_document_rejected_total", {"document": "control"}) == 100.0
    assert len(await audit.read()) == AUDIT_BURST
    clock.now += AUDIT_WINDOW_S
    await refusals.refused("control", "hotserve:control", "print-100", "forged", revision=100)
    entries = await audit.read()
    assert len(entries) == AUDIT_BURST + 1
    assert entries[-1].detail == (f"forged ({100 - AUDIT_BURST} more refused control documents not logged)")
    assert {e.who for e in entries} == {"replica:replica-a"} and {e.result for e in entries} == {"refused"}
    assert json.loads(entries[0].line())["revision"] == 0
