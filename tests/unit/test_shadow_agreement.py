"""Shadow agreement by default follows the models' task (model.json's prediction contract);
explicit policy options override; manifests without a contract keep the old tolerance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from server.contract.manifest import DriftReference, ModelManifest, PredictionContract
from server.metrics.instruments import Metrics
from server.registry.control_state import ModelControl, ShadowPolicy
from server.registry.served import ServedVersion
from server.release.policy import GateBounds
from server.routing.agreement import LEGACY_TOLERANCE, Agreement, resolve_agreement
from server.routing.build import model_routes
from server.shadow import agrees
from tests.fakes import EchoRuntime, make_manifest


def manifest(version: int, outputs: list[tuple[str, str, list[int]]], **prediction: Any) -> ModelManifest:
    built = make_manifest("m", [("x", "FP32", [-1, 3])], outputs, version=version)
    if not prediction:
        return built
    return ModelManifest.model_validate({**built.model_dump(), "prediction": prediction})


def binary(version: int, threshold: float | None = None) -> ModelManifest:
    return manifest(version, [("score", "FP32", [-1, 1])], task="binary", decision_threshold=threshold)


def scores(*values: float) -> dict[str, np.ndarray]:
    return {"score": np.array(values, np.float32).reshape(-1, 1)}


# --- the contract in model.json -------------------------------------------------------------------


def test_a_binary_contract_defaults_its_threshold_to_one_half_and_round_trips() -> None:
    written = binary(1)
    assert written.prediction == PredictionContract(task="binary", decision_threshold=0.5)
    assert ModelManifest.model_validate_json(written.model_dump_json()) == written
    assert written.prediction_output == "score"


def test_an_old_manifest_without_a_contract_still_loads_and_names_its_prediction_as_before() -> None:
    old = make_manifest("m", [("x", "FP32", [-1, 3])], [("label", "INT64", [-1]), ("p", "FP32", [-1, 2])])
    assert old.prediction is None and old.prediction_output == "label"  # the first output
    described = old.model_copy(update={"drift": DriftReference(prediction_output="p")})
    assert described.prediction_output == "p"


def test_the_prediction_output_is_the_one_drift_describes_unless_the_contract_names_it() -> None:
    outputs = [("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 3])]
    base = make_manifest("m", [("x", "FP32", [-1, 3])], outputs).model_copy(
        update={"drift": DriftReference(prediction_output="probabilities")}
    )
    with_contract = ModelManifest.model_validate({**base.model_dump(), "prediction": {"task": "multiclass"}})
    assert with_contract.prediction_output == "probabilities"
    with pytest.raises(ValidationError, match="prediction.output 'label' and drift.prediction_output 'probabilities'"):
        ModelManifest.model_validate({**base.model_dump(), "prediction": {"task": "multiclass", "output": "label"}})


@pytest.mark.parametrize(
    ("outputs", "prediction", "message"),
    [
        ([("y", "FP32", [-1])], {"task": "regression"}, "needs agreement_tolerance"),
        (
            [("y", "FP32", [-1, 3])],
            {"task": "multiclass", "decision_threshold": 0.5},
            "decision_threshold is for binary",
        ),
        (
            [("y", "FP32", [-1])],
            {"task": "binary", "agreement_tolerance": 0.1},
            "agreement_tolerance is for regression",
        ),
        ([("y", "FP32", [-1])], {"task": "binary", "output": "z"}, "prediction output 'z' is not a model output"),
        ([("y", "FP32", [-1, 3])], {"task": "binary"}, "one score per row"),
        ([("y", "BYTES", [-1])], {"task": "regression", "agreement_tolerance": 1.0}, "output 'y' is BYTES"),
        ([("y", "FP32", [-1])], {"task": "regression", "agreement_tolerance": -1.0}, "greater than or equal to 0"),
    ],
)
def test_contracts_that_do_not_fit_the_task_or_the_outputs_are_refused_with_the_reason(
    outputs: list[tuple[str, str, list[int]]], prediction: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        manifest(1, outputs, **prediction)


# --- resolution -----------------------------------------------------------------------------------


def test_binary_models_agree_on_the_same_decision_each_at_its_own_recorded_threshold() -> None:
    rule, notes = resolve_agreement(None, None, binary(2, 0.4), binary(1, 0.5))
    assert rule == Agreement(
        "decision", threshold=0.5, shadow_threshold=0.4, output="score", source="model", task="binary"
    )
    assert notes == ()
    assert rule.describe() == "same decision (production at 0.5, shadow at 0.4) on 'score' (binary, from model.json)"
    assert agrees(scores(0.55, 0.1), scores(0.45, 0.3), rule)[0]  # 0.55 >= 0.5 and 0.45 >= 0.4
    assert not agrees(scores(0.55, 0.1), scores(0.35, 0.3), rule)[0]


def test_multiclass_models_agree_on_the_same_label_and_regression_within_the_recorded_tolerance() -> None:
    classes = [("probabilities", "FP32", [-1, 3])]
    rule, _ = resolve_agreement(
        None, None, manifest(2, classes, task="multiclass"), manifest(1, classes, task="multiclass")
    )
    assert (rule.kind, rule.output, rule.source) == ("label", "probabilities", "model")
    values = [("prediction", "FP32", [-1])]
    rule, _ = resolve_agreement(
        None,
        None,
        manifest(2, values, task="regression", agreement_tolerance=2.5),
        manifest(1, values, task="regression", agreement_tolerance=9.0),
    )
    assert (rule.kind, rule.tolerance, rule.output) == ("tolerance", 2.5, "prediction")  # the candidate's
    assert rule.describe() == "within 2.5 on 'prediction' (regression, from model.json)"


def test_explicit_options_override_the_task_and_a_threshold_wins_over_a_tolerance() -> None:
    candidate, production = binary(2), binary(1)
    by_tolerance, _ = resolve_agreement(1e-3, None, candidate, production)
    assert (by_tolerance.kind, by_tolerance.tolerance, by_tolerance.output, by_tolerance.source) == (
        "tolerance",
        1e-3,
        "score",
        "policy",
    )
    by_threshold, _ = resolve_agreement(1e-3, 0.3, candidate, production)
    assert (by_threshold.kind, by_threshold.threshold, by_threshold.shadow_threshold) == ("decision", 0.3, 0.3)


def test_versions_without_a_contract_keep_the_old_rule_and_one_contract_is_enough() -> None:
    old_candidate, old_production = manifest(2, [("score", "FP32", [-1, 1])]), manifest(1, [("score", "FP32", [-1, 1])])
    rule, notes = resolve_agreement(None, None, old_candidate, old_production)
    assert rule == Agreement() and rule.tolerance == LEGACY_TOLERANCE and rule.output is None and notes == ()
    assert rule.describe() == "within 0.0001 on every output (no task in model.json)"
    assert resolve_agreement(None, None, binary(2, 0.4), old_production)[0].threshold == 0.4
    assert resolve_agreement(None, None, old_candidate, binary(1, 0.6))[0].shadow_threshold == 0.6


def test_models_of_different_tasks_fall_back_to_the_old_rule_and_say_so() -> None:
    regression = manifest(2, [("score", "FP32", [-1, 1])], task="regression", agreement_tolerance=1.0)
    rule, notes = resolve_agreement(None, None, regression, binary(1))
    assert rule == Agreement()
    assert notes == (
        "shadow version 2 is a regression model and production a binary one: agreement falls back to "
        "every output within 0.0001; set the shadow's tolerance or threshold",
    )


def test_a_prediction_output_production_lacks_is_said() -> None:
    renamed = manifest(2, [("probability", "FP32", [-1])], task="binary")
    _, notes = resolve_agreement(None, None, renamed, binary(1))
    assert notes == (
        "shadow version 2's prediction output 'probability' is not an output of production version 1: "
        "every comparison disagrees",
    )


def test_the_routing_build_resolves_a_policy_with_no_options_from_the_models() -> None:
    def served(m: ModelManifest) -> ServedVersion:
        return ServedVersion(m, EchoRuntime(), Metrics())

    v1, v2 = served(binary(1)), served(binary(2, 0.45))
    assert ShadowPolicy(version=2) == ShadowPolicy(version=2, tolerance=None, threshold=None)
    control = ModelControl(aliases={"production": 1}, shadow=ShadowPolicy(version=2))
    routes, notes = model_routes("m", control, {1, 2}, {1: v1, 2: v2}, v1)
    assert routes.shadow is not None and notes == ()
    assert routes.shadow.agreement.kind == "decision"
    assert (routes.shadow.agreement.threshold, routes.shadow.agreement.shadow_threshold) == (0.5, 0.45)
    explicit = control.model_copy(update={"shadow": ShadowPolicy(version=2, tolerance=0.01)})
    routes, _ = model_routes("m", explicit, {1, 2}, {1: v1, 2: v2}, v1)
    assert routes.shadow is not None and routes.shadow.agreement.source == "policy"


def test_a_release_policy_leaves_agreement_to_the_models_unless_its_gates_say() -> None:
    assert (GateBounds().tolerance, GateBounds().threshold) == (None, None)
    assert GateBounds.model_validate({"tolerance": 0.5}).tolerance == 0.5


# --- comparison -----------------------------------------------------------------------------------


def test_same_label_means_the_same_argmax_row_by_row_whatever_the_scores() -> None:
    label = Agreement("label", output="probabilities")
    primary = {"probabilities": np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)}
    shifted = {"probabilities": np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]], np.float32)}
    agreed, largest = agrees(primary, shifted, label)
    assert agreed and largest == pytest.approx(0.2, abs=1e-6)
    flipped = {"probabilities": np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]], np.float32)}
    assert not agrees(primary, flipped, label)[0]


def test_same_label_on_a_label_output_compares_the_labels_text_or_numbers() -> None:
    text = Agreement("label", output="label")
    primary = {"label": np.array([b"cat", b"dog"], object)}
    assert agrees(primary, {"label": np.array([b"cat", b"dog"], object)}, text) == (True, 0.0)
    assert agrees(primary, {"label": np.array([b"cat", b"cow"], object)}, text) == (False, float("inf"))
    numbers = {"label": np.array([2, 0], np.int64)}
    assert agrees(numbers, {"label": np.array([2, 0], np.int64)}, text)[0]
    assert not agrees(numbers, {"label": np.array([2, 1], np.int64)}, text)[0]


def test_a_two_column_binary_output_is_decided_on_the_positive_class() -> None:
    rule = Agreement("decision", threshold=0.3, shadow_threshold=0.3, output="probabilities")
    primary = {"probabilities": np.array([[0.65, 0.35], [0.9, 0.1]], np.float32)}
    same = {"probabilities": np.array([[0.6, 0.4], [0.8, 0.2]], np.float32)}
    assert agrees(primary, same, rule)[0]  # the negative class's 0.65 -> 0.6 crosses nothing that decides
    other = {"probabilities": np.array([[0.75, 0.25], [0.8, 0.2]], np.float32)}
    assert not agrees(primary, other, rule)[0]


def test_only_the_prediction_output_is_judged_when_the_rule_names_it() -> None:
    rule = Agreement("decision", threshold=0.5, shadow_threshold=0.5, output="score")
    primary = {**scores(0.8), "debug": np.array([[1.0]], np.float32), "note": np.array([b"a"], object)}
    shadow = {**scores(0.7), "debug": np.array([[5.0]], np.float32), "note": np.array([b"b"], object)}
    agreed, largest = agrees(primary, shadow, rule)
    assert agreed and largest == pytest.approx(0.1, abs=1e-6)
    assert agrees(primary, {"debug": primary["debug"]}, rule) == (False, float("inf"))  # no prediction
