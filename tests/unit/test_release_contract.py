"""A release starts only for a candidate that can answer what production answers (or forced,
audited), and a gate the two versions' evidence cannot judge blocks promotion unless skipped."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from server.contract.manifest import (
    BatchingPolicy,
    DriftReference,
    FeatureSpec,
    FeatureView,
    ModelManifest,
    PredictionContract,
    ReferenceHistogram,
    StoredFeature,
)
from server.evidence.recorder import MemoryEvidenceRecorder
from server.metrics.instruments import Metrics
from server.registry.audit import FileAuditLog
from server.registry.control_api import Caller, ControlAPI, ModelState, Outcome, RoutingState, VersionView
from server.registry.control_state import ModelControl, ShadowPolicy
from server.registry.versions import VersionState, VersionStatus
from server.release.compatibility import ContractMismatch, contract_differences, unjudgeable_gates
from server.release.driver import ReleaseDriver
from server.release.policy import GateBounds, ReleasePolicy
from server.release.store import LocalReleaseStore
from tests.fakes import ManualClock, make_manifest

COLUMNS = ["amount", "age", "merchant_risk"]
VIEW = FeatureView(
    name="fraud_user",
    entity_key="user_id",
    features=[StoredFeature(name="age"), StoredFeature(name="merchant_risk")],
)
SCORES = ReferenceHistogram(name="score", bin_edges=[0.0, 0.25, 0.5, 0.75, 1.0], proportions=[0.4, 0.3, 0.2, 0.1])


def scorer(version: int, **changes: object) -> ModelManifest:
    """Production's contract: v1 records joined with a feature view, a binary score, references."""
    manifest = make_manifest(
        "fraud",
        [("features", "FP32", [-1, len(COLUMNS)])],
        [("score", "FP32", [-1, 1])],
        version=version,
        features=FeatureSpec(
            input="features",
            columns=COLUMNS,
            request_features=["amount"],
            store_features=["age", "merchant_risk"],
            entity_key="user_id",
            view=VIEW,
        ),
        batching=BatchingPolicy(max_batch_size=64),
    )
    manifest = manifest.model_copy(
        update={
            "prediction": PredictionContract(task="binary", output="score", decision_threshold=0.3),
            "drift": DriftReference(prediction=SCORES, prediction_output="score"),
        }
    )
    return ModelManifest.model_validate({**manifest.model_dump(), **changes})


def test_a_candidate_with_production_s_contract_has_no_difference() -> None:
    assert contract_differences(scorer(1), scorer(2)) == []
    assert unjudgeable_gates(scorer(1), scorer(2)) == {}
    # What a candidate adds is no difference: another output, a wider batch, v1 where production had none.
    wider = scorer(2, outputs=[*scorer(2).model_dump()["outputs"], {"name": "x", "datatype": "FP32", "shape": [-1]}])
    assert contract_differences(scorer(1), wider) == []
    assert contract_differences(scorer(1, features=None), scorer(2)) == []


def test_a_candidate_without_production_s_feature_spec_and_references_is_named_on_each() -> None:
    """The issue's import: model.json came back with `features`, `prediction` and `drift` null."""
    differences = contract_differences(scorer(1), scorer(2, features=None, prediction=None, drift=None))
    assert [d.split(":")[0] for d in differences] == ["features", "prediction", "drift.prediction"]
    assert "view fraud_user:v1" in differences[0] and "refuses every v1 record (400)" in differences[0]
    assert "binary prediction in output 'score'" in differences[1]
    assert unjudgeable_gates(scorer(1), scorer(2, drift=None)) == {
        "psi": "version 2 count no predictions to compare: model.json has no binnable prediction reference "
        "(drift.prediction)"
    }


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]}, "input 'features'"),
        ({"inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 3]}]}, "input 'features'"),
        ({"outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 2]}]}, "output 'score'"),
        ({"batching": {"max_batch_size": 8}}, "batching: production answers requests of 64 rows"),
        (
            {"features": {**scorer(1).model_dump()["features"], "view": {**VIEW.model_dump(), "version": 2}}},
            "features.view: the candidate reads view fraud_user:v2, production fraud_user:v1",
        ),
        (
            {"features": {**scorer(1).model_dump()["features"], "view": {**VIEW.model_dump(), "max_age_s": 60}}},
            "features.view fraud_user:v1: defined differently (max_age_s)",
        ),
        (
            {"features": {**scorer(1).model_dump()["features"], "request_features": ["amount", "device"]}},
            "features.request_features: the candidate needs ['device']",
        ),
        ({"prediction": {"task": "regression", "agreement_tolerance": 0.1}}, "prediction.task"),
    ],
)
def test_each_way_a_candidate_cannot_answer_is_named(changes: dict[str, object], named: str) -> None:
    if "features" in changes and changes["features"] and "device" in str(changes["features"]):
        feature_spec = dict(changes["features"])  # type: ignore[call-overload]
        feature_spec["columns"] = [*COLUMNS, "device"]
        changes = {
            "features": feature_spec,
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, len(COLUMNS) + 1]}],
        }
    differences = contract_differences(scorer(1), scorer(2, **changes))
    assert any(named in d for d in differences), differences


def test_predictions_on_different_bins_cannot_be_compared() -> None:
    coarse = ReferenceHistogram(name="score", bin_edges=[0.0, 0.5, 1.0], proportions=[0.7, 0.3])
    candidate = scorer(2, drift=DriftReference(prediction=coarse, prediction_output="score").model_dump())
    assert "4 bins, the candidate's on 2" in unjudgeable_gates(scorer(1), candidate)["psi"]


class Control:
    """Production v1 and candidate v2 with the given manifests; records the routing asked for."""

    def __init__(self, candidate: ModelManifest) -> None:
        self.manifests = {1: scorer(1), 2: candidate}
        self.calls: list[str] = []

    async def model(self, name: str) -> ModelState:
        versions = tuple(
            VersionView(VersionStatus(name, v, VersionState.READY), ("production",) if v == 1 else ())
            for v in self.manifests
        )
        return ModelState(
            name, 1, ModelControl(aliases={"production": 1}), None, RoutingState(1, {}, (), False), versions
        )

    async def manifest(self, model: str, version: int) -> ModelManifest:
        return self.manifests[version]

    def _done(self, action: str) -> Outcome:
        self.calls.append(action)
        return Outcome(action, "fraud", None, None, None, True, len(self.calls))

    async def set_shadow(self, caller: Caller, model: str, policy: ShadowPolicy) -> Outcome:
        return self._done("shadow")

    async def set_traffic(self, caller: Caller, model: str, weights: dict[str, int]) -> Outcome:
        return self._done("traffic")

    async def clear_traffic(self, caller: Caller, model: str) -> Outcome:
        return self._done("clear_traffic")

    async def clear_shadow(self, caller: Caller, model: str) -> Outcome:
        return self._done("clear_shadow")

    async def promote(self, caller: Caller, model: str, version: int) -> Outcome:
        return self._done("promote")


def driver(tmp_path: Path, control: Control, clock: ManualClock) -> tuple[ReleaseDriver, MemoryEvidenceRecorder]:
    recorder = MemoryEvidenceRecorder(clock=clock)
    for version, manifest in control.manifests.items():
        recorder.open_load(manifest.model_copy(update={"version": version}))
    out = ReleaseDriver(
        LocalReleaseStore(tmp_path / "releases"),
        cast(ControlAPI, control),
        recorder,
        FileAuditLog(tmp_path / "audit.jsonl"),
        "replica-a",
        Metrics(),
        clock=clock,
    )
    return out, recorder


async def test_a_candidate_without_production_s_feature_view_is_refused_at_start_unless_forced(
    tmp_path: Path,
) -> None:
    control = Control(scorer(2, features=None))
    releases, _ = driver(tmp_path, control, ManualClock())
    with pytest.raises(ContractMismatch) as refused:
        await releases.create(Caller("oncall"), "fraud", 2, ReleasePolicy())
    assert refused.value.fields["differences"][0].startswith("features: production answers v1 records")
    assert "cannot answer what production (version 1) answers" in refused.value.message
    assert await releases.get("fraud") is None and control.calls == []

    record = await releases.create(Caller("oncall"), "fraud", 2, ReleasePolicy(), force=True)
    assert record.forced == tuple(refused.value.fields["differences"]) and record.unjudgeable == {}
    (started,) = await FileAuditLog(tmp_path / "audit.jsonl").read(model="fraud")
    assert started.who == "oncall" and '"forced": ["features: production answers v1 records' in (started.detail or "")


async def test_a_gate_that_cannot_be_judged_ends_the_release_unpromoted_unless_the_policy_skips_it(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    control = Control(scorer(2, drift=None))  # forced past the lost reference: PSI has nothing to compare
    releases, recorder = driver(tmp_path, control, clock)
    policy = ReleasePolicy(shadow_bake_s=0.0, gates=GateBounds(min_requests=10))
    record = await releases.create(Caller("oncall"), "fraud", 2, policy, force=True)
    assert set(record.unjudgeable) == {"psi"}
    await releases.tick()  # the shadow applied
    clock.now = (clock.now // 10 + 2) * 10 + 5  # inside the step's first whole evidence bucket
    production, candidate = recorder.loads()
    for _ in range(100):
        production.answered(200, 0.001, "v2")
        candidate.compared(True, 0.0)
    await releases.tick()  # too little evidence for the other gates: held, not ended
    held = await releases.get("fraud")
    assert held is not None and held.state == "running" and held.last_decision is not None
    assert "psi" in {g.gate for g in held.last_decision.gates}
    for _ in range(20_000):  # every other gate passes: the step would pass but for PSI
        production.answered(200, 0.001, "v2")
        candidate.compared(True, 0.0)
    await releases.tick()
    ended = await releases.get("fraud")
    assert ended is not None and ended.state == "inconclusive", ended
    assert ended.detail is not None and ended.detail.startswith("psi cannot be judged (version 2 count no predictions")
    assert "skip_gates: [psi]" in ended.detail
    assert ended.last_decision is not None
    psi = next(g for g in ended.last_decision.gates if g.gate == "psi")
    assert psi.verdict == "inconclusive" and psi.detail.startswith("cannot be judged: ")
    assert control.calls == ["shadow", "clear_traffic", "clear_shadow"]

    skipped = ReleasePolicy.model_validate({**policy.model_dump(), "skip_gates": ["psi"]})
    record = await releases.create(Caller("oncall"), "fraud", 2, skipped, force=True)
    assert record.unjudgeable == {}
    await releases.tick()  # the shadow applied; the evidence above is from before it
    clock.now = (clock.now // 10 + 2) * 10 + 5  # inside the step's first whole evidence bucket
    for _ in range(20_000):
        production.answered(200, 0.001, "v2")
        candidate.compared(True, 0.0)
    await releases.tick()
    judged = await releases.get("fraud")  # judged without PSI: the shadow passed
    assert judged is not None and judged.state == "running" and judged.step == 1, judged
    assert judged.history[0].decision is not None
    assert "psi" not in {g.gate for g in judged.history[0].decision.gates}
