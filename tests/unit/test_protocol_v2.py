"""v2 request decoding/validation and response encoding, JSON and binary extension."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from server.contract.manifest import BatchingPolicy, FeatureSpec
from server.errors import InvalidInput
from server.protocol import v2_request, v2_response
from server.protocol.datatypes import NUMPY_DTYPES, tensor_to_bytes, v2_datatype
from server.protocol.schema import ModelSchema
from server.protocol.v2_request import InferRequest, RequestedOutput, decode_infer_request
from server.protocol.v2_response import encode_infer_response
from tests.fakes import make_manifest

ALL_TYPES = sorted(NUMPY_DTYPES)


def _schema_all_types() -> ModelSchema:
    specs = [(f"in_{t.lower()}", t, [-1, 2]) for t in ALL_TYPES]
    return ModelSchema.from_manifest(make_manifest("all", specs, [("out", "FP32", [-1, 1])]))


def _tabular_schema() -> ModelSchema:
    features = FeatureSpec(input="features", columns=["a", "b"], request_features=["a", "b"])
    return ModelSchema.from_manifest(
        make_manifest(
            "tab",
            [("features", "FP32", [-1, 2])],
            [("score", "FP32", [-1, 1]), ("label", "INT64", [-1])],
            features=features,
        )
    )


def _sample(datatype: str) -> list[list[Any]]:
    return {
        "BOOL": [[True, False], [False, True]],
        "BYTES": [["ab", ""], ["c\u00e9", "d"]],
        "FP16": [[0.5, -1.0], [2.0, 3.5]],
        "FP32": [[0.25, -1.0], [2.0, 3.5]],
        "FP64": [[0.1, -1.0], [2.0, 1e300]],
    }.get(datatype, [[1, 2], [3, 4]])


def _body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def _tab_input(data: Any, shape: Any = None, **extra: Any) -> dict[str, Any]:
    return {"name": "features", "datatype": "FP32", "shape": shape or [2, 2], "data": data, **extra}


def test_every_datatype_decodes_from_nested_and_flat_json() -> None:
    schema = _schema_all_types()
    for nested in (True, False):
        inputs = []
        for t in ALL_TYPES:
            data = _sample(t)
            inputs.append(
                {
                    "name": f"in_{t.lower()}",
                    "datatype": t,
                    "shape": [2, 2],
                    "data": data if nested else [v for row in data for v in row],
                }
            )
        decoded = decode_infer_request(_body(inputs), None, schema)
        assert decoded.rows == 2
        for t in ALL_TYPES:
            tensor = decoded.inputs[f"in_{t.lower()}"]
            assert tensor.shape == (2, 2) and tensor.dtype == NUMPY_DTYPES[t]
            expected = _sample(t)
            if t == "BYTES":
                expected = [[s.encode() for s in row] for row in expected]
            assert tensor.tolist() == expected


def test_every_datatype_decodes_from_binary_data() -> None:
    schema = _schema_all_types()
    inputs, blobs = [], []
    arrays = {}
    for t in ALL_TYPES:
        data = _sample(t)
        array = (
            np.array([[s.encode() for s in row] for row in data], dtype=object)
            if t == "BYTES"
            else np.asarray(data, dtype=NUMPY_DTYPES[t])
        )
        raw = tensor_to_bytes(array)
        arrays[t] = array
        blobs.append(raw)
        inputs.append(
            {"name": f"in_{t.lower()}", "datatype": t, "shape": [2, 2], "parameters": {"binary_data_size": len(raw)}}
        )
    header = _body(inputs)
    decoded = decode_infer_request(header + b"".join(blobs), str(len(header)), schema)
    for t in ALL_TYPES:
        np.testing.assert_array_equal(decoded.inputs[f"in_{t.lower()}"], arrays[t])


@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_every_datatype_encodes_as_json_and_binary(datatype: str) -> None:
    data = _sample(datatype)
    array = (
        np.array([[s.encode() for s in row] for row in data], dtype=object)
        if datatype == "BYTES"
        else np.asarray(data, dtype=NUMPY_DTYPES[datatype])
    )
    for binary in (False, True):
        request = InferRequest(
            id="r1", parameters={"p": 1}, inputs={}, rows=2, outputs=[RequestedOutput("out", binary)], timeout_us=None
        )
        body, header_length = encode_infer_response("m", 3, request, {"out": array, "other": array})
        doc = orjson.loads(body[:header_length] if binary else body)
        assert doc["model_name"] == "m" and doc["model_version"] == "3"
        assert doc["id"] == "r1" and doc["parameters"] == {"p": 1}
        (out,) = doc["outputs"]
        assert out["name"] == "out" and out["datatype"] == datatype and out["shape"] == [2, 2]
        if binary:
            assert header_length is not None
            assert out["parameters"]["binary_data_size"] == len(body) - header_length
            assert body[header_length:] == tensor_to_bytes(array)
        else:
            assert header_length is None
            flat = [v for row in data for v in row]
            if datatype in ("FP16", "FP32"):
                np.testing.assert_allclose(out["data"], np.asarray(flat, dtype=NUMPY_DTYPES[datatype]))
            else:
                assert out["data"] == flat


def test_requested_outputs_choose_which_and_how_each_is_sent() -> None:
    schema = _tabular_schema()
    body = _body(
        [_tab_input([[1, 2], [3, 4]])],
        parameters={"binary_data_output": True},
        outputs=[{"name": "label", "parameters": {"binary_data": False}}],
    )
    decoded = decode_infer_request(body, None, schema)
    assert decoded.outputs == [RequestedOutput("label", False)]
    everything = decode_infer_request(
        _body([_tab_input([[1, 2], [3, 4]])], parameters={"binary_data_output": True}), None, schema
    )
    assert everything.outputs == [RequestedOutput("score", True), RequestedOutput("label", True)]


@pytest.mark.parametrize("timeout, expected", [(2500, 2500), (0, None)])
def test_timeout_parameter_is_read_in_microseconds(timeout: int, expected: int | None) -> None:
    body = _body([_tab_input([[1, 2], [3, 4]])], parameters={"timeout": timeout})
    assert decode_infer_request(body, None, _tabular_schema()).timeout_us == expected


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "body: expected a JSON object, got invalid JSON"),
        (b"[1]", "body: expected a JSON object, got list"),
        (_body([]), "inputs: expected a non-empty list, got an empty list"),
        (
            _body([{"name": "nope", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]),
            "inputs\\[0\\].name: expected one of \\['features'\\], got 'nope'",
        ),
        (
            _body(
                [_tab_input([[1, 2], [3, 4]], datatype="FP64")],
            ),
            "inputs.features.datatype: expected FP32, got 'FP64'",
        ),
        (_body([_tab_input([1, 2, 3, 4], shape=[4])]), "inputs.features.shape: expected 2 non-negative dims"),
        (
            _body([_tab_input([1, 2, 3, 4, 5, 6], shape=[2, 3])]),
            "inputs.features.shape: expected \\[-1, 2\\], got \\[2, 3\\] \\(axis 1 is 3\\)",
        ),
        (_body([_tab_input([], shape=[0, 2])]), "inputs.features.shape: expected at least one row"),
        (_body([_tab_input([1, 2, 3])]), "inputs.features.data: expected 4 values for shape \\[2, 2\\], got 3"),
        (_body([_tab_input([[1, 2], [3]])]), "inputs.features.data: expected a flat or evenly nested list"),
        (_body([_tab_input([1, "2", 3, 4])]), "inputs.features.data: expected FP32 values, got strings"),
        (_body([_tab_input([1, None, 3, 4])]), "expected FP32 values, got mixed or null values"),
        (_body([_tab_input([True, False, True, True])]), "expected FP32 values, got booleans"),
        (
            _body([_tab_input([1, 2, 3, 1e39])]),
            "inputs.features.data: expected finite numbers, got inf at index \\[1, 1\\]",
        ),
        (_body([_tab_input([[1, 2], [3, 4]]), _tab_input([[1, 2], [3, 4]])]), "inputs.features: given more than once"),
        (_body([{"name": "features", "datatype": "FP32", "shape": [2, 2]}]), "inputs.features.data: missing"),
        (
            _body([_tab_input([1, 2, 3, 4])], outputs=[{"name": "nah"}]),
            "outputs\\[0\\].name: expected one of \\['score', 'label'\\], got 'nah'",
        ),
        (
            _body([_tab_input([1, 2, 3, 4])], outputs=[{"name": ["score"]}]),
            "outputs\\[0\\].name: expected one of \\['score', 'label'\\], got \\['score'\\]",
        ),
        (
            _body([_tab_input([1, 2, 3, 4])], outputs=[{"name": "score"}, {"name": "score"}]),
            "outputs.score: requested more than once",
        ),
        (
            _body([_tab_input([1, 2, 3, 4])], parameters={"binary_data_output": "yes"}),
            "parameters.binary_data_output: expected true or false, got 'yes'",
        ),
        (
            _body([_tab_input([1, 2, 3, 4])], parameters={"timeout": 1.5}),
            "parameters.timeout: expected non-negative integer microseconds, got 1.5",
        ),
        (
            _body([_tab_input([1, 2, 3, 4], parameters={"binary_data_size": 16})]),
            "binary_data_size: needs the Inference-Header-Content-Length header",
        ),
        # the id is echoed in the answer, whose v2 schema says string (schemathesis found `{}` echoed)
        (_body([_tab_input([1, 2, 3, 4])], id={}), "id: expected a string, got dict"),
        (_body([_tab_input([1, 2, 3, 4])], id=7), "id: expected a string, got int"),
    ],
)
def test_malformed_json_requests_are_refused_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(body, None, _tabular_schema())


def _int_schema(datatype: str) -> ModelSchema:
    return ModelSchema.from_manifest(make_manifest("i", [("x", datatype, [-1])], [("y", "FP32", [-1])]))


@pytest.mark.parametrize(
    "datatype, data, message",
    [
        ("INT32", [1, 2.5], "inputs.x.data: expected INT32 values, got floats"),
        ("UINT8", [1, 256], "expected UINT8 values in \\[0, 255\\], got values in \\[1, 256\\]"),
        ("INT8", [-129, 0], "expected INT8 values in \\[-128, 127\\]"),
        ("BOOL", [1, 0], "expected BOOL values, got integers"),
        ("BYTES", ["a", 1], "expected BYTES values as strings, got int at index 1"),
    ],
)
def test_values_outside_the_datatype_are_refused(datatype: str, data: list[Any], message: str) -> None:
    body = _body([{"name": "x", "datatype": datatype, "shape": [2], "data": data}])
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(body, None, _int_schema(datatype))


def test_inputs_with_different_row_counts_are_refused() -> None:
    schema = ModelSchema.from_manifest(
        make_manifest("two", [("a", "FP32", [-1, 1]), ("b", "INT64", [-1])], [("y", "FP32", [-1])])
    )
    body = _body(
        [
            {"name": "a", "datatype": "FP32", "shape": [2, 1], "data": [1, 2]},
            {"name": "b", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]},
        ]
    )
    with pytest.raises(InvalidInput, match="inputs.b.shape: expected 2 rows like input 'a', got 3 rows"):
        decode_infer_request(body, None, schema)
    missing = _body([{"name": "a", "datatype": "FP32", "shape": [2, 1], "data": [1, 2]}])
    with pytest.raises(InvalidInput, match="inputs: expected inputs \\['a', 'b'\\], got \\['b'\\] missing"):
        decode_infer_request(missing, None, schema)


def _binary_body(values: np.ndarray, claimed: int | None = None, extra: bytes = b"") -> tuple[bytes, str]:
    raw = values.tobytes()
    header = _body(
        [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": list(values.shape),
                "parameters": {"binary_data_size": len(raw) if claimed is None else claimed},
            }
        ]
    )
    return header + raw + extra, str(len(header))


def test_binary_nan_in_tabular_features_is_refused() -> None:
    body, length = _binary_body(np.array([[1.0, np.nan]], dtype=np.float32))
    with pytest.raises(
        InvalidInput, match="inputs.features.data: expected finite numbers, got nan at index \\[0, 1\\]"
    ):
        decode_infer_request(body, length, _tabular_schema())


def test_binary_nan_passes_for_inputs_without_the_finite_rule() -> None:
    schema = _int_schema("FP32")
    raw = np.array([np.nan, 1.0], dtype=np.float32).tobytes()
    header = _body([{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}])
    decoded = decode_infer_request(header + raw, str(len(header)), schema)
    assert np.isnan(decoded.inputs["x"][0])


@pytest.mark.parametrize(
    "case, message",
    [
        ("short_claim", "expected 8 bytes for FP32 shape \\[1, 2\\], got 4 bytes"),
        ("over_claim", "binary_data_size: expected 0..8 \\(binary bytes left\\), got 12"),
        ("leftover", "binary_data_size: expected sizes summing to 12 binary bytes, got 8 bytes claimed"),
        ("header_too_long", "Inference-Header-Content-Length: expected 1\\.\\."),
        ("header_not_int", "Inference-Header-Content-Length: expected an integer, got 'abc'"),
    ],
)
def test_wrong_binary_sizes_are_refused(case: str, message: str) -> None:
    values = np.array([[1.0, 2.0]], dtype=np.float32)
    body, length = {
        "short_claim": lambda: _binary_body(values, claimed=4),
        "over_claim": lambda: _binary_body(values, claimed=12),
        "leftover": lambda: _binary_body(values, extra=b"\x00" * 4),
        "header_too_long": lambda: (_binary_body(values)[0], "100000"),
        "header_not_int": lambda: (_binary_body(values)[0], "abc"),
    }[case]()
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(body, length, _tabular_schema())


def test_binary_and_json_inputs_mix_in_one_request() -> None:
    schema = ModelSchema.from_manifest(
        make_manifest("two", [("a", "FP32", [-1, 1]), ("b", "BYTES", [-1])], [("y", "FP32", [-1])])
    )
    words = np.array([b"x", b"yz"], dtype=object)
    raw = tensor_to_bytes(words)
    header = _body(
        [
            {"name": "a", "datatype": "FP32", "shape": [2, 1], "data": [1, 2]},
            {"name": "b", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}},
        ]
    )
    decoded = decode_infer_request(header + raw, str(len(header)), schema)
    assert decoded.inputs["b"].tolist() == [b"x", b"yz"]
    assert decoded.inputs["a"].tolist() == [[1.0], [2.0]]
    assert struct.unpack_from("<I", raw)[0] == 1


def test_binary_bytes_element_that_is_not_utf8_is_refused_naming_it() -> None:
    schema = _int_schema("BYTES")
    raw = tensor_to_bytes(np.array([b"ok", b"\xff\xfe"], dtype=object))
    header = _body([{"name": "x", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}])
    with pytest.raises(
        InvalidInput,
        match="inputs.x.data: expected UTF-8 text in every BYTES element, got invalid start byte in element 1",
    ):
        decode_infer_request(header + raw, str(len(header)), schema)


def test_a_model_without_a_batch_axis_takes_whole_tensors_as_one_run() -> None:
    whole = BatchingPolicy(enabled=False, batch_axis=False, max_batch_size=1)
    schema = ModelSchema.from_manifest(
        make_manifest("whole", [("a", "FP32", [3, 2]), ("b", "INT64", [-1])], [("y", "FP32", [3, 2])], batching=whole)
    )
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [3, 2], "data": [1, 2, 3, 4, 5, 6]},
                {"name": "b", "datatype": "INT64", "shape": [5], "data": [1, 2, 3, 4, 5]},
            ]
        }
    )
    request = decode_infer_request(body, None, schema)
    assert request.rows == 1  # differing first axes are no row mismatch: there are no rows
    assert request.inputs["a"].shape == (3, 2) and request.inputs["b"].shape == (5,)


# --- the short path of a plain float request, against the full decoder and encoder ---------------


def _float_schemas() -> list[ModelSchema]:
    tabular = _tabular_schema()
    two = ModelSchema.from_manifest(
        make_manifest("two", [("a", "FP32", [-1, 2]), ("b", "FP64", [-1])], [("y", "FP32", [-1])])
    )
    whole = ModelSchema.from_manifest(
        make_manifest(
            "whole",
            [("a", "FP32", [3, 2])],
            [("y", "FP32", [3, 2])],
            batching=BatchingPolicy(enabled=False, batch_axis=False, max_batch_size=1),
        )
    )
    return [tabular, two, whole]


_BIG32 = float(np.finfo(np.float32).max)
_SHORT_PATH_BODIES: list[dict[str, Any]] = [
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])]},
    {"id": "r-1", "inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])]},
    {"id": 7, "inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])]},
    {"id": None, "inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])]},
    {"inputs": [_tab_input([0.5, -1.0], shape=[1, 2])]},
    {"inputs": [_tab_input([0.5, -1, 2.25, 3.0])]},
    {"inputs": [_tab_input([0.5, True, 2.25, 3.0])]},
    {"inputs": [_tab_input([1, 2, 3, 4])]},
    {"inputs": [_tab_input([0.5, "1.0", 2.25, 3.0])]},
    {"inputs": [_tab_input([0.5, None, 2.25, 3.0])]},
    {"inputs": [_tab_input([[0.5, -1.0], [2.25, 3.0]])]},
    {"inputs": [_tab_input([[0.5, -1.0, 2.25, 3.0]], shape=[1, 4])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0, 1.0])]},
    {"inputs": [_tab_input([1e39, -1.0, 2.25, 3.0])]},
    {"inputs": [_tab_input([_BIG32, -1.0, 2.25, 3.0])]},
    {"inputs": [_tab_input([_BIG32, _BIG32, 2.25, 3.0])]},
    {"inputs": [_tab_input([1e308, 1e308, 2.25, 3.0])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0], shape=[4, 1])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0], shape=[2, 2.0])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0], shape=[True, 4])]},
    {"inputs": [_tab_input([], shape=[0, 2])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0], shape=[2, -2])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0], shape=[2, 2, 1])]},
    {"inputs": [{**_tab_input([0.5, -1.0, 2.25, 3.0]), "datatype": "FP64"}]},
    {"inputs": [{**_tab_input([0.5, -1.0, 2.25, 3.0]), "name": "other"}]},
    {"inputs": [{**_tab_input([0.5, -1.0, 2.25, 3.0]), "name": ["features"]}]},
    {"inputs": [{**_tab_input([0.5, -1.0, 2.25, 3.0]), "parameters": {}}]},
    {"inputs": [{**_tab_input([0.5, -1.0, 2.25, 3.0]), "data": {"a": 1.0}}]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0]), _tab_input([0.5, -1.0, 2.25, 3.0])]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])], "outputs": [{"name": "score"}]},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])], "parameters": {"timeout": 5}},
    {"inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])], "extra": 1},
    {"inputs": []},
    {"inputs": {"features": 1}},
    {"inputs": [[0.5]]},
    {"inputs": [{"name": "a", "datatype": "FP32", "shape": [3, 2], "data": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]}]},
    {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 1.0, 1.5, 2.0]}]},
    {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 1.0, 1.5, 2.0]},
            {"name": "b", "datatype": "FP64", "shape": [2], "data": [1e300, -2.5]},
        ]
    },
    {
        "inputs": [
            {"name": "b", "datatype": "FP64", "shape": [1], "data": [1e300]},
            {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 1.0, 1.5, 2.0]},
        ]
    },
    {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.0]},
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.0]},
        ]
    },
    {"inputs": [{"name": "b", "datatype": "FP64", "shape": [2], "data": [1e308, 1e308]}]},
]


def _decoded_or_error(body: bytes, schema: ModelSchema) -> Any:
    try:
        decoded = decode_infer_request(body, None, schema)
    except InvalidInput as error:
        return str(error)
    tensors = {name: (t.dtype, t.shape, t.tolist()) for name, t in decoded.inputs.items()}
    return decoded.id, decoded.parameters, tensors, decoded.rows, decoded.outputs, decoded.timeout_us


@pytest.mark.parametrize("doc", _SHORT_PATH_BODIES)
def test_a_plain_float_request_decodes_as_the_full_decoder_decodes_it(doc: dict[str, Any]) -> None:
    body = orjson.dumps(doc)
    for schema in _float_schemas():
        assert schema.float_inputs, "every input FP32/FP64: the short path applies"
        full = dataclasses.replace(schema, float_inputs={})  # the full decoder only
        assert _decoded_or_error(body, schema) == _decoded_or_error(body, full)


def test_a_plain_float_request_takes_the_short_path_and_keeps_the_rules() -> None:
    schema = _tabular_schema()
    doc = {"id": "r-1", "inputs": [_tab_input([0.5, -1.0, 2.25, 3.0])]}
    short = v2_request._plain_float_request(doc, schema)
    assert short is not None
    assert short.inputs["features"].dtype == np.float32 and short.inputs["features"].tolist() == [
        [0.5, -1.0],
        [2.25, 3.0],
    ]
    assert short.outputs == [RequestedOutput("score", False), RequestedOutput("label", False)]
    # Outside the short path: the full decoder answers (and its messages are the ones given).
    for values in ([1e39, 1.0, 1.0, 1.0], [float("nan"), 1.0, 1.0, 1.0], [float("inf"), 1.0, 1.0, 1.0]):
        assert v2_request._plain_float_request({"inputs": [_tab_input(values)]}, schema) is None
    with pytest.raises(InvalidInput, match="finite numbers"):
        decode_infer_request(orjson.dumps({"inputs": [_tab_input([1e39, 1.0, 1.0, 1.0])]}), None, schema)


def test_only_models_whose_inputs_are_all_fp32_or_fp64_have_a_short_path() -> None:
    mixed = ModelSchema.from_manifest(
        make_manifest("m", [("a", "FP32", [-1, 1]), ("b", "INT64", [-1])], [("y", "FP32", [-1])])
    )
    assert mixed.float_inputs == {}
    assert set(_float_schemas()[1].float_inputs) == {"a", "b"}


def _full_encoding(name: str, version: int, request: InferRequest, results: dict[str, np.ndarray]) -> bytes:
    doc: dict[str, Any] = {"model_name": name, "model_version": str(version)}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = [
        {
            "name": wanted.name,
            "datatype": v2_datatype(results[wanted.name].dtype),
            "shape": list(results[wanted.name].shape),
            "data": np.ascontiguousarray(results[wanted.name]).ravel(),
        }
        for wanted in request.outputs
    ]
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize("request_id", [None, 'r-\u00e9"1'])
@pytest.mark.parametrize(
    "results",
    [
        {"p": np.array([0.12345678, 0.5, 1e-7], dtype=np.float32)[1:2]},
        {"p": np.array([[0.1, 2.0], [3.5, -0.0]], dtype=np.float64)},
        {"p": np.arange(12, dtype=np.int64).reshape(3, 4)[:, 1]},
        {"p": np.array([True, False]), "q": np.array([[1, 2]], dtype=np.uint8)},
        {"q": np.array([7], dtype=np.int32), "p": np.array([0.25], dtype=np.float32)},
    ],
)
def test_a_json_response_of_numbers_is_the_same_bytes_as_the_full_encoding(
    request_id: str | None, results: dict[str, np.ndarray]
) -> None:
    outputs = [RequestedOutput(name, False) for name in results]
    request = InferRequest(request_id, None, {}, 1, outputs, None)
    body, header_length = encode_infer_response("m\u00e9", 12, request, results)
    assert header_length is None
    assert body == _full_encoding("m\u00e9", 12, request, results)
    assert v2_response._plain_json_response("m\u00e9", 12, request, results) == body  # the short path made it
