"""`ReleaseDriver`: creates, reads and aborts releases, and drives the running ones (control path).

Every replica runs the same loop: each tick it publishes its own evidence (per-bucket window
summaries) to the release store, then, for each running release whose lease it holds (or takes,
when the holder stopped renewing), does at most one step: apply the step's routing through the
`ControlAPI`, or judge the fleet's evidence since the step started and move on, promote, roll
back, or end inconclusive. Each transition is stored by compare-and-set, so a replica that lost
its lease meanwhile stores nothing, and audited with the evidence bundle (JSON).

A stored record is driven only if it verifies (signed with the fleet's key, `store.py`) and
follows from its schedule and from the last record of its release this replica stored or saw
(`transitions.py`: no step skipped, none undone, no replay); any other is refused, reported
through `refusals.py` and left alone: what serves stays as it is. The audit names the admin token
that started the release (signed into the record) or that asked for the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from functools import reduce

from server.errors import Conflict, ControlStateUnavailable, HotserveError, InvalidInput, ModelNotFound
from server.evidence.recorder import MemoryEvidenceRecorder
from server.evidence.summary import WindowSummary
from server.evidence.windows import EvidenceWindows
from server.metrics.instruments import Metrics
from server.registry.audit import AuditEntry, AuditLog, Result
from server.registry.control_api import Caller, ControlAPI
from server.registry.control_signing import ControlSignatureInvalid
from server.registry.control_state import PRODUCTION, ShadowPolicy
from server.registry.refusals import RecordedRefusals, Refusals, fingerprint
from server.release.compatibility import blocked, judged_evidence, reported, start_check, unjudged_detail
from server.release.gates import (
    Decision,
    GateResult,
    Verdict,
    canary_decision,
    combine,
    gate_alpha,
    shadow_decision,
)
from server.release.label_gate import LabelGate
from server.release.policy import ReleasePolicy
from server.release.record import ReleaseRecord, State, Step, StepResult
from server.release.registry_alias import MlflowAliases
from server.release.store import LocalReleaseStore, ReleaseStore
from server.release.transitions import transition_problem

log = logging.getLogger(__name__)

ABORT_ATTEMPTS = 20
"""Compare-and-set tries of an abort against a driver storing the record every tick."""


class ReleaseRecordRefused(ControlStateUnavailable):
    """The stored record does not follow from the last one this replica saw (503; reported)."""

    def __init__(self, where: str) -> None:
        super().__init__(f"release record {where} was refused (see the audit log); DEL it to start another release")


class ReleaseDriver:
    def __init__(
        self,
        store: ReleaseStore,
        controller: ControlAPI,
        recorder: MemoryEvidenceRecorder,
        audit: AuditLog,
        replica: str,
        metrics: Metrics,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        registry: MlflowAliases | None = None,
        labels: LabelGate | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self._store = store
        self._controller = controller
        self._recorder = recorder
        self._windows: EvidenceWindows = recorder.windows
        self._audit = audit
        self._replica = replica
        self._metrics = metrics
        self._tick_s = tick_s
        self._clock = clock
        self._registry = registry
        self._labels = labels
        self._refusals = refusals or RecordedRefusals(metrics, audit, replica)
        self._known: dict[str, ReleaseRecord] = {}
        """Per model, the last record this replica stored or trusted: a stored one must follow it."""
        self._task: asyncio.Task[None] | None = None

    # --- admin operations ---------------------------------------------------------------------

    async def create(
        self, caller: Caller, model: str, version: int, policy: ReleasePolicy, force: bool = False
    ) -> ReleaseRecord:
        """Start releasing `version` of `model`: 404 unknown, 409 when it already serves, a
        release of the model is running, or it cannot answer what production answers (unless
        `force`, which the record and the audit keep; `compatibility.py`)."""
        if policy.registry is not None and self._registry is None:
            raise InvalidInput(
                "policy.registry",
                detail="this server has no MLflow tracking URI to move the alias in "
                "(HOTSERVE_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI)",
            )
        state = await self._controller.model(model)
        if version not in {v.status.version for v in state.versions}:
            raise ModelNotFound(model, version)
        if state.serving is None:
            raise Conflict(f"model {model!r} serves no version to release against")
        if state.serving == version:
            raise Conflict(f"model {model!r} version {version} already serves production")
        stored = await self._store.get(model)
        if stored is not None and not stored.finished:
            raise Conflict(f"a release of model {model!r} (version {stored.version}) is running; abort it first")
        production = await self._controller.manifest(model, state.serving)
        candidate = await self._controller.manifest(model, version)
        differences, unjudgeable = start_check(model, production, candidate, policy, force)
        record = ReleaseRecord(
            id=uuid.uuid4().hex[:12],
            model=model,
            version=version,
            baseline=state.serving,
            policy=policy,
            created_by=caller.name,
            created_at=self._clock(),
            driver=self._replica,
            forced=differences,
            unjudgeable=unjudgeable,
        )
        record = await self._store.put(record, 0 if stored is None else stored.seq)
        started: dict[str, object] = {"event": "started", "policy": policy.model_dump(mode="json")}
        if differences:
            started["forced"] = list(differences)  # what the operator forced past (`force`)
        self._known[model] = record
        await self._entry(record, "ok", started, caller.name)
        return record

    async def get(self, model: str) -> ReleaseRecord | None:
        return await self._store.get(model)

    async def abort(self, caller: Caller, model: str) -> ReleaseRecord:
        """Ask the driving replica to roll the release back (409 when none is running). The
        driver stores the record every tick, so a store that lost the race is tried again on the
        newer record: an operator's abort does not fail because the release moved on."""
        for _ in range(ABORT_ATTEMPTS):
            record = await self._store.get(model)
            if record is None or record.finished:
                raise Conflict(f"model {model!r} has no running release")
            if not await self._trusted(record):
                raise ReleaseRecordRefused(self._store.location(model))
            update = {"abort_requested": True, "detail": f"abort requested by {caller.name}"}
            try:
                stored = await self._store.put(record.model_copy(update=update), record.seq)
            except Conflict:
                continue
            self._known[model] = stored
            await self._entry(stored, "ok", {"event": "abort_requested"}, caller.name)
            return stored
        raise Conflict(f"the release of {model!r} kept changing; abort it again")

    # --- the loop -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="release-driver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._store.close()
        if self._registry is not None:
            await self._registry.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # one bad tick (Redis away) must not end the loop
                log.exception("release driver tick failed")
            await asyncio.sleep(self._tick_s)

    async def tick(self) -> None:
        """Publish this replica's evidence, then advance each running release this replica drives."""
        running = []
        for model in await self._store.models():
            try:
                record = await self._store.get(model)
            except ControlSignatureInvalid:
                continue  # refused and reported by the store: nothing of it is driven
            if record is not None and await self._trusted(record) and not record.finished:
                running.append(record)
        if not running:
            return
        await self._publish()
        for record in running:
            if await self._store.hold(record.model, self._replica, max(3 * self._tick_s, 2.0)):
                try:
                    await self._advance(record)
                except Conflict:
                    log.info("release of %r moved on elsewhere; not driving this tick", record.model)

    async def _publish(self) -> None:
        if isinstance(self._store, LocalReleaseStore):
            return
        newest = self._windows.slot(self._clock())
        recent = range(newest - max(2, int(3 * self._tick_s / self._windows.bucket_s) + 1), newest + 1)
        summaries = [(slot, load.summary(slot, slot)) for load in self._recorder.loads() for slot in recent]
        kept = [(slot, s) for slot, s in summaries if s.requests or s.comparisons.compared or s.comparisons.failed]
        await self._store.publish(self._replica, kept, self._windows.bucket_s * self._windows.buckets)

    async def _advance(self, record: ReleaseRecord) -> None:
        now = self._clock()
        step = record.current
        caller = Caller(f"release:{record.id}")
        if record.abort_requested:
            await self._finish(record, "aborted", record.detail or "aborted", rollback=True)
            return
        if step is None:  # every step passed and the promotion did not complete: do it again
            await self._promote(record)
            return
        if record.step_started_at is None:
            try:
                await self._apply(caller, record, step)
            except HotserveError as error:
                await self._finish(record, "rolled_back", f"{step.label} could not start: {error.message}", True)
                return
            record = await self._put(record, step_started_at=now, last_decision=None)
            self._metrics.release_step.labels(record.model).set(record.step)
            await self._entry(record, "ok", {"event": "step", "step": step.label})
            return
        decision = await self._decide(record, step, record.step_started_at, now)
        loaded = await self._load_gate(record, record.step_started_at)
        if loaded is not None:
            decision = combine([loaded, *decision.gates])
        if self._labels is not None:  # candidate against production on the same labelled requests
            labelled = await self._labels.judge(
                record.model,
                record.version,
                record.baseline,
                record.step_started_at,
                now,
                record.policy.labels,
                gate_alpha(record.policy),
            )
            decision = combine([*decision.gates, labelled])
        for gate in decision.gates:
            if gate.measured is not None:
                self._metrics.release_gate_value.labels(record.model, gate.gate).set(gate.measured)
        if decision.verdict is Verdict.FAIL:
            await self._finish(record, "rolled_back", f"{step.label} failed a gate", True, decision)
            return
        if blocked(record, decision) and now - record.step_started_at >= self._bake(record, step):
            # Every other gate passed: the step would pass but for a gate no traffic can judge.
            rollback = record.policy.on_inconclusive == "rollback"
            await self._finish(record, "inconclusive", unjudged_detail(record), rollback, decision)
            return
        if decision.verdict is Verdict.PASS and now - record.step_started_at >= self._bake(record, step):
            done = StepResult(step=step, started_at=record.step_started_at, ended_at=now, decision=decision)
            record = await self._put(
                record, step=record.step + 1, step_started_at=None, last_decision=None, history=(*record.history, done)
            )
            await self._entry(record, "ok", {"event": "passed", "step": step.label, **decision.model_dump(mode="json")})
            if record.current is None:
                await self._promote(record)
            return
        if now >= record.created_at + record.policy.deadline_s:
            rollback = record.policy.on_inconclusive == "rollback"
            action = "rolled back" if rollback else "held"
            await self._finish(
                record,
                "inconclusive",
                f"{step.label}: too little evidence by the deadline; {action}",
                rollback,
                decision,
            )
            return
        await self._put(record, last_decision=decision)

    def _bake(self, record: ReleaseRecord, step: Step) -> float:
        return record.policy.shadow_bake_s if step.kind == "shadow" else record.policy.canary_bake_s

    async def _apply(self, caller: Caller, record: ReleaseRecord, step: Step) -> None:
        gates = record.policy.gates
        shadow = ShadowPolicy(
            version=record.version,
            share=record.policy.shadow_share,
            tolerance=gates.tolerance,
            threshold=gates.threshold,
        )
        await self._controller.set_shadow(caller, record.model, shadow)
        if step.weight is not None:
            await self._controller.set_traffic(
                caller, record.model, {PRODUCTION: 100 - step.weight, str(record.version): step.weight}
            )

    async def _decide(self, record: ReleaseRecord, step: Step, since: float, now: float) -> Decision:
        # From the first whole bucket after the step's routing was applied: the step's evidence
        # alone, the same buckets for both versions (the bucket it started in is partly the last step's).
        bucket_s = self._windows.bucket_s
        first, last = self._windows.span(math.ceil(since / bucket_s) * bucket_s, now, now)
        candidate = await self._evidence(record.model, record.version, first, last)
        baseline = await self._evidence(record.model, record.baseline, first, last)
        judge = shadow_decision if step.kind == "shadow" else canary_decision
        candidate, baseline = judged_evidence(record, candidate), judged_evidence(record, baseline)
        return reported(record, judge(candidate, baseline, record.policy.gates, gate_alpha(record.policy)))

    async def _load_gate(self, record: ReleaseRecord, since: float) -> GateResult | None:
        """Fails when a replica reported, since the step was applied, that the candidate failed to
        load there (its routing falls back to production on that replica, so it would never be
        judged there); None with no fleet reports to read (one replica, a local store)."""
        if isinstance(self._store, LocalReleaseStore):
            return None
        reports = [r for r in (await self._controller.replicas()).replicas if r.reported_at >= since]
        failed = {
            r.replica: reason
            for r in reports
            if (reason := r.failed.get(record.model, {}).get(str(record.version))) is not None
        }
        detail = "; ".join(f"{replica}: {reason}" for replica, reason in sorted(failed.items()))
        return GateResult(
            gate="load",
            measured=float(len(failed)),
            bound=0.0,
            samples=len(reports),
            verdict=Verdict.FAIL if failed else Verdict.PASS,
            detail=f"failed to load on {detail}" if failed else f"loaded on every replica reporting ({len(reports)})",
        )

    async def _evidence(self, model: str, version: int, first: int, last: int) -> WindowSummary:
        """`version` over buckets `first`..`last`: summed over the fleet, or this replica's alone."""
        since, until = self._windows.interval(first, last)
        empty = WindowSummary(model=model, version=version, since=since, until=until)
        if isinstance(self._store, LocalReleaseStore):
            return await self._recorder.summary(model, version, since, until)
        return reduce(WindowSummary.merge, await self._store.fleet(model, version, first, last), empty)

    async def _promote(self, record: ReleaseRecord) -> None:
        caller = Caller(f"release:{record.id}")
        await self._controller.promote(caller, record.model, record.version)
        await self._controller.clear_traffic(caller, record.model)
        await self._controller.clear_shadow(caller, record.model)
        await self._finish(record, "promoted", f"version {record.version} promoted to production", False)

    async def _finish(
        self, record: ReleaseRecord, state: State, detail: str, rollback: bool, decision: Decision | None = None
    ) -> None:
        if rollback:
            caller = Caller(f"release:{record.id}")
            await self._controller.clear_traffic(caller, record.model)
            await self._controller.clear_shadow(caller, record.model)
        registry = None
        if record.policy.registry is not None and self._registry is not None:
            # Before the verdict is stored: a replica taking over after a crash here does it again.
            registry = await self._registry.record_verdict(record, state, detail, decision or record.last_decision)
            if registry.error is not None:
                log.warning("release %s: the registry was not updated: %s", record.id, registry.error)
        record = await self._put(
            record,
            state=state,
            detail=detail,
            finished_at=self._clock(),
            last_decision=decision or record.last_decision,
            registry=registry,
        )
        self._metrics.release_step.labels(record.model).set(-1)
        self._metrics.release_verdicts.labels(record.model, state).inc()
        result: Result = "ok" if state == "promoted" else "failed"
        bundle: dict[str, object] = {"event": "verdict", "state": state, "detail": detail}
        if decision is not None:
            bundle.update(decision.model_dump(mode="json"))
        if registry is not None:
            bundle["registry"] = registry.model_dump(mode="json")
        await self._entry(record, result, bundle)
        log.info("release %s of %r version %d: %s (%s)", record.id, record.model, record.version, state, detail)

    async def _trusted(self, record: ReleaseRecord) -> bool:
        """Whether `record` may be driven: it follows from its schedule and from the last record of
        its release this replica saw (`transitions.py`); else it is reported and left alone."""
        where = self._store.location(record.model)
        problem = transition_problem(self._known.get(record.model), record)
        if problem is not None:
            await self._refusals.refused(
                "release",
                where,
                fingerprint(record.model_dump_json()),
                f"release record {where}: seq {record.seq} {problem}; not driven",
                record.model,
                record.seq,
            )
            return False
        self._known[record.model] = record
        self._refusals.verified("release", where)
        return True

    async def _put(self, record: ReleaseRecord, **update: object) -> ReleaseRecord:
        """Store the next record of `record`'s release: only a step from the one stored, and only
        past a step that passed (anything else is a bug here, and nothing is stored)."""
        out = record.model_copy(update={**update, "driver": self._replica})
        problem = transition_problem(record, out.model_copy(update={"seq": record.seq + 1}))
        if problem is None and out.step > record.step + 1:
            problem = f"skips from step {record.step} to {out.step}"
        if problem is not None:
            raise RuntimeError(f"release {record.id}: not storing a record that {problem}")
        stored = await self._store.put(out, record.seq)
        self._known[record.model] = stored
        return stored

    async def _entry(
        self, record: ReleaseRecord, result: Result, bundle: dict[str, object], who: str | None = None
    ) -> None:
        """Audit an event of `record`'s release by `who` (the admin token that asked for it), by
        default the token that started it: from the signed, verified record, never an unsigned field."""
        entry = AuditEntry.model_validate(
            {
                "who": who or record.created_by,
                "action": "release",
                "model": record.model,
                "from": record.baseline,
                "to": record.version,
                "result": result,
                "detail": json.dumps({"release": record.id, "replica": self._replica, **bundle}, sort_keys=True),
            }
        )
        try:
            await self._audit.append(entry)
        except OSError:
            log.exception("could not append to the audit log: %s", entry.line().decode().strip())
