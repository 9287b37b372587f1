"""Whether a candidate can answer what production answers, and which gates can judge the two
(control path, when a release starts).

A release moves production's clients to the candidate: a v2 client keeps sending production's
tensors, a v1 client production's records, and reads production's outputs. `contract_differences`
names every way the candidate's model.json cannot take or answer those (inputs, outputs, the
largest request, the feature spec and view behind v1 records, the prediction contract, the drift
reference), so such a candidate is refused at start unless the operator forces it; canary traffic
would otherwise find it one refused request at a time. What the candidate adds (another output, v1
records production had no spec for) is no difference. `unjudgeable_gates` names the gates the two
versions' evidence cannot decide (PSI without a prediction reference on both sides, or on
different bins): such a gate blocks promotion unless the policy skips it.
"""

from __future__ import annotations

from server.contract.manifest import FeatureSpec, FeatureView, ModelManifest, TensorSpec
from server.errors import Conflict
from server.evidence.predictions import PredictionBins
from server.evidence.summary import WindowSummary
from server.release.gates import Decision, GateResult, Verdict, combine
from server.release.policy import ReleasePolicy
from server.release.record import ReleaseRecord

PSI = "psi"


class ContractMismatch(Conflict):
    """The candidate cannot answer what production answers (409, each difference in the body)."""

    def __init__(self, model: str, version: int, production: int, differences: list[str]) -> None:
        super().__init__(
            f"model {model!r} version {version} cannot answer what production (version {production}) answers: "
            + "; ".join(differences)
            + " (start the release with force to release it anyway; it is audited)"
        )
        self.fields = {"differences": differences}


def start_check(
    model: str, production: ModelManifest, candidate: ModelManifest, policy: ReleasePolicy, force: bool
) -> tuple[tuple[str, ...], dict[str, str]]:
    """What a release starts with: the contract differences the operator forced past, and the
    gates that cannot be judged and are not skipped. ContractMismatch when the candidate cannot
    answer what production answers and the operator did not force it."""
    differences = contract_differences(production, candidate)
    if differences and not force:
        raise ContractMismatch(model, candidate.version, production.version, differences)
    unjudgeable = unjudgeable_gates(production, candidate)
    return tuple(differences), {gate: why for gate, why in unjudgeable.items() if gate not in policy.skip_gates}


def judged_evidence(record: ReleaseRecord, summary: WindowSummary) -> WindowSummary:
    """`summary` as the gates may read it: without predictions when PSI is not to be judged."""
    if summary.predictions is None or (PSI not in record.unjudgeable and PSI not in record.policy.skip_gates):
        return summary
    return summary.model_copy(update={"predictions": None})


def reported(record: ReleaseRecord, decision: Decision) -> Decision:
    """`decision` with each gate that cannot be judged reported as such (it blocks promotion)."""
    if not record.unjudgeable:
        return decision
    unjudged = [
        GateResult(
            gate=gate,
            measured=None,
            bound=record.policy.gates.max_psi if gate == PSI else 0.0,
            samples=0,
            verdict=Verdict.INCONCLUSIVE,
            detail=f"cannot be judged: {why}",
        )
        for gate, why in sorted(record.unjudgeable.items())
    ]
    return combine([*decision.gates, *unjudged])


def blocked(record: ReleaseRecord, decision: Decision) -> bool:
    """Whether only gates that cannot be judged keep `decision` from passing."""
    judged = [g for g in decision.gates if g.gate not in record.unjudgeable]
    return bool(record.unjudgeable) and combine(judged).verdict is Verdict.PASS


def unjudged_detail(record: ReleaseRecord) -> str:
    """Why a release with gates that cannot be judged ends without promotion (at the end of its
    first step whose other gates all passed)."""
    gates = sorted(record.unjudgeable)
    return (
        f"{', '.join(gates)} cannot be judged ({'; '.join(record.unjudgeable[g] for g in gates)}); not promoted "
        f"unjudged: give the versions comparable references, or skip_gates: [{', '.join(gates)}] in the policy"
    )


def contract_differences(production: ModelManifest, candidate: ModelManifest) -> list[str]:
    """Each way `candidate` cannot take or answer what `production` does, as a sentence naming
    the field and both values; empty when it can answer everything production answers."""
    return [
        *_inputs(production.inputs, candidate.inputs),
        *_outputs(production.outputs, candidate.outputs),
        *_largest_request(production, candidate),
        *_features(production.features, candidate.features),
        *_prediction(production, candidate),
        *_drift(production, candidate),
    ]


def unjudgeable_gates(production: ModelManifest, candidate: ModelManifest) -> dict[str, str]:
    """Gate -> why the two versions' evidence cannot decide it (see the module doc)."""
    theirs, ours = PredictionBins.of(production), PredictionBins.of(candidate)
    missing = [f"version {m.version}" for m, bins in ((production, theirs), (candidate, ours)) if bins is None]
    if missing:
        return {
            PSI: f"{' and '.join(missing)} count no predictions to compare: model.json has no binnable "
            "prediction reference (drift.prediction)"
        }
    assert theirs is not None and ours is not None
    if theirs.bins != ours.bins:
        return {
            PSI: f"production's predictions are counted on {theirs.bins} bins, the candidate's on {ours.bins}: "
            "PSI between them compares unlike bins"
        }
    return {}


def _shape(spec: TensorSpec) -> str:
    return f"{spec.datatype} {spec.shape}"


def _inputs(production: list[TensorSpec], candidate: list[TensorSpec]) -> list[str]:
    ours = {s.name: s for s in candidate}
    out = []
    for spec in production:
        mine = ours.pop(spec.name, None)
        if mine is None:
            out.append(f"input {spec.name!r}: production takes {_shape(spec)}, the candidate has no such input")
        elif mine.datatype != spec.datatype or not _accepts(mine.shape, spec.shape):
            out.append(f"input {spec.name!r}: production takes {_shape(spec)}, the candidate {_shape(mine)}")
    out += [
        f"input {name!r}: the candidate needs it ({_shape(spec)}), production's clients do not send it"
        for name, spec in ours.items()
    ]
    return out


def _accepts(candidate: list[int], production: list[int]) -> bool:
    """Every tensor of `production`'s shape has `candidate`'s (-1: any size)."""
    return len(candidate) == len(production) and all(c in (-1, p) for c, p in zip(candidate, production, strict=True))


def _outputs(production: list[TensorSpec], candidate: list[TensorSpec]) -> list[str]:
    ours = {s.name: s for s in candidate}
    out = []
    for spec in production:
        mine = ours.get(spec.name)
        if mine is None:
            out.append(f"output {spec.name!r}: production answers {_shape(spec)}, the candidate has no such output")
        elif mine.datatype != spec.datatype or not _accepts(spec.shape, mine.shape):
            out.append(f"output {spec.name!r}: production answers {_shape(spec)}, the candidate {_shape(mine)}")
    return out


def _largest_request(production: ModelManifest, candidate: ModelManifest) -> list[str]:
    """Rows one request may carry: unbounded when the batcher splits large requests."""
    theirs, ours = production.batching, candidate.batching
    if theirs.batch_axis != ours.batch_axis:
        return [
            f"batching.batch_axis: production {theirs.batch_axis}, the candidate {ours.batch_axis} "
            "(one reads the first axis as rows, the other as the whole tensor)"
        ]
    if not ours.batch_axis or ours.allow_split:
        return []
    if theirs.allow_split or ours.max_batch_size < theirs.max_batch_size:
        most = "any number, split" if theirs.allow_split else str(theirs.max_batch_size)
        return [
            f"batching: production answers requests of {most} rows, the candidate refuses more than "
            f"{ours.max_batch_size} (max_batch_size, allow_split false)"
        ]
    return []


def _features(production: FeatureSpec | None, candidate: FeatureSpec | None) -> list[str]:
    """v1 records: production's clients send production's request features and entity key."""
    if production is None:
        return []
    if candidate is None:
        if production.view is not None:
            records = f"keyed by {production.entity_key!r}, joined with view {production.view.label}"
        elif production.store_features:
            records = f"keyed by {production.entity_key!r}"
        else:
            records = f"carrying {production.request_features}"
        return [
            f"features: production answers v1 records ({records}); the candidate has no feature spec, "
            "so it refuses every v1 record (400)"
        ]
    out = []
    if candidate.store_features and candidate.entity_key != production.entity_key:
        out.append(
            f"features.entity_key: production's records carry {production.entity_key!r}, "
            f"the candidate looks stored features up by {candidate.entity_key!r}"
        )
    extra = [f for f in candidate.request_features if f not in production.request_features]
    if extra:
        out.append(
            f"features.request_features: the candidate needs {extra} in each record, production's records need not carry them"
        )
    if candidate.view is not None and candidate.view != production.view:
        out.append(_view_difference(production.view, candidate.view))
    return out


def _view_difference(production: FeatureView | None, candidate: FeatureView) -> str:
    if production is None:
        return f"features.view: the candidate reads view {candidate.label}, production reads no feature view"
    if production.label != candidate.label:
        return (
            f"features.view: the candidate reads view {candidate.label}, production {production.label} "
            "(another view's keys may not be materialized)"
        )
    theirs, ours = production.model_dump(), candidate.model_dump()
    changed = sorted(k for k in theirs if theirs[k] != ours[k])
    return (
        f"features.view {candidate.label}: defined differently ({', '.join(changed)}) under the same name and "
        "version; a changed view needs a new version"
    )


def _prediction(production: ModelManifest, candidate: ModelManifest) -> list[str]:
    theirs, ours = production.prediction, candidate.prediction
    if theirs is None:
        return []
    if ours is None:
        return [
            f"prediction: production's answer is a {theirs.task} prediction in output "
            f"{production.prediction_output!r}; the candidate records no prediction contract"
        ]
    out = []
    if ours.task != theirs.task:
        out.append(f"prediction.task: production {theirs.task}, the candidate {ours.task}")
    if candidate.prediction_output != production.prediction_output:
        out.append(
            f"prediction output: production answers it in {production.prediction_output!r}, "
            f"the candidate in {candidate.prediction_output!r}"
        )
    return out


def _drift(production: ModelManifest, candidate: ModelManifest) -> list[str]:
    theirs, ours = production.drift, candidate.drift
    if theirs is None:
        return []
    out = []
    if theirs.prediction is not None and (ours is None or ours.prediction is None):
        out.append(
            "drift.prediction: production has a prediction reference (drift monitoring, the release's PSI gate), "
            "the candidate none"
        )
    have = {h.name for h in ours.features} if ours is not None else set()
    lost = [h.name for h in theirs.features if h.name not in have]
    if lost:
        out.append(f"drift.features: production has references for {lost}, the candidate not")
    return out
