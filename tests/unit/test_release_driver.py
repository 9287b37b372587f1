"""`ReleaseDriver` on one replica (local store, this process's evidence, a hand-moved clock):
the schedule's steps, promotion exactly once, abort, and the inconclusive actions."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from fakes import ManualClock, fake_manifest

from server.evidence.recorder import MemoryEvidenceRecorder
from server.metrics.instruments import Metrics
from server.registry.audit import FileAuditLog
from server.registry.control_api import Caller, ControlAPI, Outcome
from server.registry.control_state import ShadowPolicy
from server.release.driver import ReleaseDriver
from server.release.policy import ReleasePolicy
from server.release.record import ReleaseRecord
from server.release.store import LocalReleaseStore

POLICY = ReleasePolicy(shadow_bake_s=15.0, canary_weights=(50,), canary_bake_s=15.0, deadline_s=60.0)
"""The default gates; evidence buckets are 10 s wide and the clock starts on a bucket's edge."""


class RecordingControl:
    """The routing changes a release asks for, in order (what the `Controller` would apply)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def _done(self, action: str, detail: object) -> Outcome:
        self.calls.append((action, detail))
        return Outcome(action, "fraud", None, None, None, True, len(self.calls))

    async def set_shadow(self, caller: Caller, model: str, policy: ShadowPolicy) -> Outcome:
        return self._done("shadow", policy.version)

    async def set_traffic(self, caller: Caller, model: str, weights: dict[str, int]) -> Outcome:
        return self._done("traffic", weights)

    async def clear_traffic(self, caller: Caller, model: str) -> Outcome:
        return self._done("clear_traffic", None)

    async def clear_shadow(self, caller: Caller, model: str) -> Outcome:
        return self._done("clear_shadow", None)

    async def promote(self, caller: Caller, model: str, version: int) -> Outcome:
        return self._done("promote", version)


class Harness:
    def __init__(self, tmp_path: Path, policy: ReleasePolicy = POLICY, store: LocalReleaseStore | None = None) -> None:
        self.clock = ManualClock()
        self.recorder = MemoryEvidenceRecorder(clock=self.clock)
        self.production = self.recorder.open_load(fake_manifest("fraud", 1))
        self.candidate = self.recorder.open_load(fake_manifest("fraud", 2))
        self.control = RecordingControl()
        self.audit = FileAuditLog(tmp_path / "audit.jsonl")
        self.store = store or LocalReleaseStore(tmp_path / "releases")
        self.metrics = Metrics()
        self.driver = ReleaseDriver(
            self.store,
            cast(ControlAPI, self.control),
            self.recorder,
            self.audit,
            "replica-a",
            self.metrics,
            clock=self.clock,
        )
        self.policy = policy

    async def start(self) -> None:
        record = ReleaseRecord(
            id="r1", model="fraud", version=2, baseline=1, policy=self.policy, created_by="ci", created_at=self.clock()
        )
        await self.store.put(record, 0)

    def traffic(self, canary: bool, requests: int = 2000) -> None:
        """`requests` answered by production, each copied to the candidate and agreed on; with
        `canary`, as many answered by the candidate too."""
        for _ in range(requests):
            self.production.answered(200, 0.002)
            self.candidate.compared(True, 0.0)
            if canary:
                self.candidate.answered(200, 0.002)

    async def state(self) -> ReleaseRecord:
        record = await self.store.get("fraud")
        assert record is not None
        return record


async def test_a_release_runs_its_schedule_and_promotes_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.driver.tick()  # apply the shadow
    assert h.control.calls == [("shadow", 2)]
    h.traffic(canary=False)
    h.clock.now += 10.0
    await h.driver.tick()  # evidence enough, bake time not yet over: stays
    assert (await h.state()).step == 0 and (await h.state()).last_decision is not None
    h.clock.now += 5.0
    await h.driver.tick()  # shadow passed
    assert (await h.state()).step == 1
    await h.driver.tick()  # apply canary 50%
    assert h.metrics.registry.get_sample_value("hotserve_release_step", {"model": "fraud"}) == 1.0
    assert h.control.calls[-2:] == [("shadow", 2), ("traffic", {"production": 50, "2": 50})]
    h.clock.now += 5.0  # the step's evidence starts at the next whole bucket
    h.traffic(canary=True)
    h.clock.now += 10.0
    await h.driver.tick()  # canary passed: promote
    record = await h.state()
    assert record.state == "promoted" and [r.step.label for r in record.history] == ["shadow", "canary 50%"]
    assert h.control.calls[-3:] == [("promote", 2), ("clear_traffic", None), ("clear_shadow", None)]
    await h.driver.tick()
    assert [c for c in h.control.calls if c[0] == "promote"] == [("promote", 2)]
    verdicts = [e for e in await h.audit.read(model="fraud") if '"event": "verdict"' in (e.detail or "")]
    assert len(verdicts) == 1 and verdicts[0].result == "ok"
    sample = h.metrics.registry.get_sample_value
    assert sample("hotserve_release_verdicts_total", {"model": "fraud", "verdict": "promoted"}) == 1.0
    assert sample("hotserve_release_step", {"model": "fraud"}) == -1.0
    assert sample("hotserve_release_gate_value", {"model": "fraud", "gate": "error_rate"}) == 0.0


async def test_an_abort_rolls_back_and_never_promotes(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.driver.tick()
    await h.driver.abort(Caller("oncall"), "fraud")
    await h.driver.tick()
    record = await h.state()
    assert record.state == "aborted" and record.detail == "abort requested by oncall"
    assert h.control.calls == [("shadow", 2), ("clear_traffic", None), ("clear_shadow", None)]
    with pytest.raises(Exception, match="no running release"):
        await h.driver.abort(Caller("oncall"), "fraud")


class RacingStore(LocalReleaseStore):
    """Stores the record once more (as the driving replica's tick would) just before each of the
    first `races` aborts is stored, so that abort's compare-and-set loses."""

    def __init__(self, folder: Path, races: int) -> None:
        super().__init__(folder)
        self.races = races

    async def put(self, record: ReleaseRecord, expected_seq: int) -> ReleaseRecord:
        if record.abort_requested and self.races:
            self.races -= 1
            stored = await self.get(record.model)
            assert stored is not None
            await super().put(stored, stored.seq)
        return await super().put(record, expected_seq)


async def test_an_abort_that_loses_the_race_with_a_tick_is_stored_on_the_newer_record(tmp_path: Path) -> None:
    store = RacingStore(tmp_path / "releases", races=2)
    h = Harness(tmp_path, store=store)
    await h.start()
    await h.driver.tick()
    aborted = await h.driver.abort(Caller("oncall"), "fraud")
    assert aborted.abort_requested and store.races == 0
    await h.driver.tick()
    assert (await h.state()).state == "aborted"


@pytest.mark.parametrize(("action", "cleared"), [("rollback", True), ("hold", False)])
async def test_too_little_evidence_by_the_deadline_is_inconclusive(tmp_path: Path, action: str, cleared: bool) -> None:
    h = Harness(tmp_path, POLICY.model_copy(update={"on_inconclusive": action}))
    await h.start()
    await h.driver.tick()
    h.traffic(canary=False, requests=20)
    h.clock.now += 61.0
    await h.driver.tick()
    record = await h.state()
    assert record.state == "inconclusive" and record.last_decision is not None
    assert record.last_decision.verdict == "inconclusive"
    assert (("clear_shadow", None) in h.control.calls) is cleared
    assert ("promote", 2) not in h.control.calls
