"""v1 records -> feature tensor, raw rows, and predictions encoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from server.contract.manifest import FeatureSpec
from server.errors import InvalidInput
from server.protocol.schema import ModelSchema
from server.protocol.v1 import assemble_features, check_records, encode_predictions, parse_instances, raw_tensor
from tests.fakes import make_manifest

SPEC = FeatureSpec(
    input="features",
    columns=["amount", "age", "hour"],
    request_features=["hour", "amount", "age"],
    entity_key="customer_id",
)
SCHEMA = ModelSchema.from_manifest(
    make_manifest("tab", [("features", "FP32", [-1, 3])], [("score", "FP32", [-1, 1])], features=SPEC)
)


def _records(*records: dict[str, Any]) -> list[dict[str, Any]]:
    return check_records(parse_instances(orjson.dumps({"instances": list(records)})), SPEC)


def test_records_are_assembled_in_column_order() -> None:
    records = _records(
        {"age": 30, "hour": 2, "amount": 12.5, "customer_id": "c1"}, {"hour": 23, "amount": 1, "age": 61.5}
    )
    tensor = assemble_features(records, SPEC, SCHEMA)
    assert tensor.dtype == np.float32
    assert tensor.tolist() == [[12.5, 30.0, 2.0], [1.0, 61.5, 23.0]]


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"age": 1, "hour": 2}], "instances\\[0\\].amount: missing"),
        (
            [{"age": 1, "hour": 2, "amount": 3}, {"age": 1, "hour": 2, "amount": 3, "colour": "red"}],
            "instances\\[1\\].colour: unknown field; the model takes \\['age', 'amount', 'customer_id', 'hour'\\]",
        ),
        ([7], "instances\\[0\\]: expected an object of features, got int"),
    ],
)
def test_bad_records_name_instance_and_field(records: list[Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_records(records, SPEC)


STORE_SPEC = FeatureSpec(
    input="features",
    columns=["amount", "age", "hour"],
    request_features=["amount", "hour"],
    store_features=["age"],
    entity_key="customer_id",
)


def test_records_may_carry_store_features_when_no_store_joins_them() -> None:
    records = check_records([{"amount": 3, "hour": 2, "age": 40, "customer_id": "c9"}], STORE_SPEC)
    assert assemble_features(records, STORE_SPEC, SCHEMA).tolist() == [[3.0, 40.0, 2.0]]


def test_missing_store_feature_says_it_is_a_store_feature() -> None:
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.age: missing \(a store feature"):
        check_records([{"amount": 3, "hour": 2, "customer_id": "c9"}], STORE_SPEC)


@pytest.mark.parametrize(
    "value, message",
    [
        ("12", "instances\\[0\\].amount: expected a number, got str"),
        (None, "instances\\[0\\].amount: expected a number, got NoneType"),
        (True, "instances\\[0\\].amount: expected a number, got bool"),
        (1e39, "instances\\[0\\].amount: expected a finite FP32, got inf"),
    ],
)
def test_non_numeric_or_non_finite_values_name_instance_and_field(value: Any, message: str) -> None:
    records = _records({"age": 1, "hour": 2, "amount": value})
    with pytest.raises(InvalidInput, match=message):
        assemble_features(records, SPEC, SCHEMA)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{}", 'instances: missing: a v1 body is {"instances": \\[...\\]}, one entry per record; this body is {}$'),
        (
            b'{"inputs": []}',
            "instances: missing: .*; this body's keys are 'inputs' \\(v2 `inputs` go to /v2/models/{name}/infer\\)",
        ),
        (b'{"instances": []}', "instances: expected a non-empty list of records, got an empty list"),
        (b'{"instances": null}', "instances: expected a non-empty list of records, got a JSON null"),
        (b"[]", 'body: expected a JSON object {"instances": \\[...\\]}, got a JSON array'),
        (b"{", "body: expected a JSON object"),
    ],
)
def test_bodies_without_instances_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_instances(body)


def test_models_without_feature_spec_take_raw_rows_of_their_single_input() -> None:
    schema = ModelSchema.from_manifest(make_manifest("raw", [("x", "INT64", [-1, 2])], [("y", "FP32", [-1])]))
    name, tensor = raw_tensor([[1, 2], [3, 4], [5, 6]], schema)
    assert name == "x" and tensor.dtype == np.int64 and tensor.tolist() == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(InvalidInput, match="instances.shape: expected \\[-1, 2\\], got \\[1, 3\\]"):
        raw_tensor([[1, 2, 3]], schema)
    two_inputs = ModelSchema.from_manifest(
        make_manifest("two", [("a", "FP32", [-1]), ("b", "FP32", [-1])], [("y", "FP32", [-1])])
    )
    with pytest.raises(InvalidInput, match="inputs \\['a', 'b'\\] and no feature spec; use the v2 protocol"):
        raw_tensor([1.0], two_inputs)


def test_predictions_are_rows_of_the_single_output_or_objects_of_several() -> None:
    score = np.array([[0.25], [0.75]], dtype=np.float32)
    label = np.array([0, 1], dtype=np.int64)
    one = orjson.loads(encode_predictions("m", 2, {"score": score, "label": label}, ("score",)))
    assert one == {"predictions": [[0.25], [0.75]], "model_name": "m", "model_version": "2"}
    both = orjson.loads(encode_predictions("m", 2, {"score": score, "label": label}, ("score", "label")))
    assert both["predictions"] == [{"score": [0.25], "label": 0}, {"score": [0.75], "label": 1}]


def test_several_outputs_of_onnxruntime_integer_types_serialise_per_instance() -> None:
    """onnxruntime hands int64 outputs as numpy `longlong`, whose scalars orjson refuses."""
    label = np.array([0, 1], dtype=np.longlong)
    probabilities = np.array([[0.75, 0.25], [0.5, 0.5]], dtype=np.float32)
    body = encode_predictions("m", 1, {"label": label, "probabilities": probabilities}, ("label", "probabilities"))
    assert orjson.loads(body)["predictions"] == [
        {"label": 0, "probabilities": [0.75, 0.25]},
        {"label": 1, "probabilities": [0.5, 0.5]},
    ]
