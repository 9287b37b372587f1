"""gRPC ModelInferRequest decoding and ModelInferResponse encoding, raw and typed contents."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest

from server.contract.manifest import FeatureSpec
from server.errors import InvalidInput
from server.protocol.datatypes import NUMPY_DTYPES, tensor_to_bytes
from server.protocol.grpc_codec import TYPED_CONTENTS, decode_model_infer, encode_model_infer
from server.protocol.proto import inference_pb2 as pb
from server.protocol.schema import ModelSchema
from server.protocol.v2_request import RequestedOutput
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


def _sample(datatype: str) -> np.ndarray:
    values: Any = {
        "BOOL": [[True, False], [False, True]],
        "BYTES": [[b"ab", b""], ["cé".encode(), b"d"]],
        "FP16": [[0.5, -1.0], [2.0, 3.5]],
        "FP32": [[0.25, -1.0], [2.0, 3.5]],
        "FP64": [[0.1, -1.0], [2.0, 1e300]],
    }.get(datatype, [[1, 2], [3, 4]])
    return np.array(values, dtype=object if datatype == "BYTES" else NUMPY_DTYPES[datatype])


def _tab_request(values: list[float], shape: list[int] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tab")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=shape or [2, 2])
    tensor.contents.fp32_contents.extend(values)
    return request


def _refused(request: pb.ModelInferRequest, schema: ModelSchema | None = None) -> str:
    with pytest.raises(InvalidInput) as refused:
        decode_model_infer(request, schema or _tabular_schema())
    return refused.value.message


def test_every_datatype_decodes_from_raw_contents() -> None:
    request = pb.ModelInferRequest(model_name="all")
    for datatype in ALL_TYPES:
        request.inputs.add(name=f"in_{datatype.lower()}", datatype=datatype, shape=[2, 2])
        request.raw_input_contents.append(tensor_to_bytes(_sample(datatype)))
    decoded = decode_model_infer(request, _schema_all_types())
    assert decoded.rows == 2
    for datatype in ALL_TYPES:
        np.testing.assert_array_equal(decoded.inputs[f"in_{datatype.lower()}"], _sample(datatype))
    # raw inputs: raw outputs, every model output, as tritonclient.grpc expects
    assert decoded.outputs == [RequestedOutput("out", True)]


def test_every_datatype_but_fp16_decodes_from_typed_contents() -> None:
    request = pb.ModelInferRequest(model_name="all")
    typed = [t for t in ALL_TYPES if t != "FP16"]
    for datatype in typed:
        tensor = request.inputs.add(name=f"in_{datatype.lower()}", datatype=datatype, shape=[2, 2])
        getattr(tensor.contents, TYPED_CONTENTS[datatype]).extend(_sample(datatype).ravel().tolist())
    schema = ModelSchema.from_manifest(
        make_manifest("all", [(f"in_{t.lower()}", t, [-1, 2]) for t in typed], [("out", "FP32", [-1, 1])])
    )
    decoded = decode_model_infer(request, schema)
    for datatype in typed:
        got = decoded.inputs[f"in_{datatype.lower()}"]
        np.testing.assert_array_equal(got, _sample(datatype))
        assert got.dtype == NUMPY_DTYPES[datatype]
    assert decoded.outputs == [RequestedOutput("out", False)]


def test_parameters_id_timeout_and_requested_outputs_are_read() -> None:
    request = _tab_request([1.0, 2.0, 3.0, 4.0])
    request.id = "r-1"
    request.parameters["timeout"].int64_param = 2500
    request.parameters["binary_data_output"].bool_param = True
    request.outputs.add(name="label").parameters["binary_data"].bool_param = False
    request.outputs.add(name="score")
    decoded = decode_model_infer(request, _tabular_schema())
    assert (decoded.id, decoded.timeout_us) == ("r-1", 2500)
    assert decoded.outputs == [RequestedOutput("label", False), RequestedOutput("score", True)]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.ClearField("inputs"), "inputs: expected a non-empty list, got an empty list"),
        (lambda r: setattr(r.inputs[0], "name", "x"), "inputs[0].name: expected one of ['features'], got 'x'"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP64"), "inputs.features.datatype: expected FP32, got 'FP64'"),
        (lambda r: r.inputs[0].shape.append(1), "inputs.features.shape: expected 2 non-negative dims like [-1, 2]"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -2), "inputs.features.shape: expected 2 non-negative dims"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 0), "inputs.features.shape: expected at least one row"),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 3),
            "inputs.features.contents.fp32_contents: expected 6 values for shape [3, 2], got 4 values",
        ),
        (
            lambda r: r.inputs[0].contents.fp32_contents.__setitem__(1, math.nan),
            "inputs.features.contents.fp32_contents: expected finite numbers, got nan at index [0, 1]",
        ),
        (
            lambda r: r.inputs[0].contents.int64_contents.append(1),
            "inputs.features.contents: expected fp32_contents for FP32, got int64_contents",
        ),
        (lambda r: r.inputs.append(r.inputs[0]), "inputs.features: given more than once"),
        (
            lambda r: r.raw_input_contents.append(b"\x00" * 16),
            "inputs.features.contents: given with raw_input_contents",
        ),
        (lambda r: r.outputs.add(name="nope"), "outputs[0].name: expected one of ['score', 'label'], got 'nope'"),
        (
            lambda r: (r.outputs.add(name="score"), r.outputs.add(name="score")),
            "outputs.score: requested more than once",
        ),
        (
            lambda r: r.parameters["timeout"].CopyFrom(pb.InferParameter(int64_param=-1)),
            "parameters.timeout: expected non-negative integer microseconds, got -1",
        ),
        (
            lambda r: r.parameters["binary_data_output"].CopyFrom(pb.InferParameter(string_param="yes")),
            "parameters.binary_data_output: expected true or false, got 'yes'",
        ),
        (lambda r: r.parameters["x"].CopyFrom(pb.InferParameter()), "parameters.x: expected a value"),
    ],
)
def test_malformed_requests_are_refused_naming_the_field(change: Any, message: str) -> None:
    request = _tab_request([1.0, 2.0, 3.0, 4.0])
    change(request)
    assert message in _refused(request)


def test_raw_contents_of_the_wrong_size_or_count_are_refused() -> None:
    request = pb.ModelInferRequest(model_name="tab")
    request.inputs.add(name="features", datatype="FP32", shape=[2, 2])
    request.raw_input_contents.append(b"\x00" * 15)
    assert _refused(request) == "raw_input_contents[0]: expected 16 bytes for FP32 shape [2, 2], got 15 bytes"
    request.raw_input_contents.append(b"")
    assert _refused(request) == "raw_input_contents: expected 1 entries, one per input, got 2 entries"


def test_integers_outside_the_inputs_type_are_refused_not_wrapped() -> None:
    schema = ModelSchema.from_manifest(make_manifest("i8", [("x", "INT8", [-1])], [("y", "INT8", [-1])]))
    request = pb.ModelInferRequest(model_name="i8")
    request.inputs.add(name="x", datatype="INT8", shape=[2]).contents.int_contents.extend([1, 300])
    assert (
        _refused(request, schema)
        == "inputs.x.contents.int_contents: expected INT8 values in [-128, 127], got values in [1, 300]"
    )


def test_bytes_elements_must_be_utf8_in_both_encodings() -> None:
    schema = ModelSchema.from_manifest(make_manifest("s", [("s", "BYTES", [-1])], [("t", "BYTES", [-1])]))
    typed = pb.ModelInferRequest(model_name="s")
    typed.inputs.add(name="s", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff")
    assert "UTF-8 text in every BYTES element" in _refused(typed, schema)
    raw = pb.ModelInferRequest(model_name="s")
    raw.inputs.add(name="s", datatype="BYTES", shape=[1])
    raw.raw_input_contents.append(struct.pack("<I", 1) + b"\xff")
    assert "UTF-8 text in every BYTES element" in _refused(raw, schema)


def test_a_huge_bytes_shape_is_refused_without_allocating_it() -> None:
    schema = ModelSchema.from_manifest(make_manifest("s", [("s", "BYTES", [-1])], [("t", "BYTES", [-1])]))
    raw = pb.ModelInferRequest(model_name="s")
    raw.inputs.add(name="s", datatype="BYTES", shape=[2**40])
    raw.raw_input_contents.append(struct.pack("<I", 1) + b"a")
    assert "data ending inside element 1" in _refused(raw, schema)


def test_outputs_are_encoded_typed_unless_raw_was_asked_or_needed() -> None:
    schema = _tabular_schema()
    results = {"score": np.array([[0.5], [0.25]], dtype=np.float32), "label": np.array([1, 0], dtype=np.int64)}
    typed = encode_model_infer("tab", 3, decode_model_infer(_tab_request([1.0] * 4), schema), results)
    assert (typed.model_name, typed.model_version, typed.id) == ("tab", "3", "")
    assert not typed.raw_output_contents
    assert [(o.name, o.datatype, list(o.shape)) for o in typed.outputs] == [
        ("score", "FP32", [2, 1]),
        ("label", "INT64", [2]),
    ]
    assert list(typed.outputs[0].contents.fp32_contents) == [0.5, 0.25]
    assert list(typed.outputs[1].contents.int64_contents) == [1, 0]

    request = _tab_request([1.0] * 4)
    request.outputs.add(name="label").parameters["binary_data"].bool_param = True
    raw = encode_model_infer("tab", 3, decode_model_infer(request, schema), results)
    assert list(raw.raw_output_contents) == [results["label"].tobytes()]
    assert not raw.outputs[0].HasField("contents")


def test_fp16_and_bytes_outputs() -> None:
    schema = ModelSchema.from_manifest(
        make_manifest("m", [("x", "FP32", [-1])], [("h", "FP16", [-1]), ("s", "BYTES", [-1])])
    )
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    decoded = decode_model_infer(request, schema)
    results = {"h": np.array([1.5], dtype=np.float16), "s": np.array([b"\xff\x00"], dtype=object)}
    response = encode_model_infer("m", 1, decoded, results)  # FP16 has no typed field: all raw
    assert list(response.raw_output_contents) == [results["h"].tobytes(), struct.pack("<I", 2) + b"\xff\x00"]
    request.outputs.add(name="s")
    typed = encode_model_infer("m", 1, decode_model_infer(request, schema), {"s": results["s"]})
    assert list(typed.outputs[0].contents.bytes_contents) == [b"\xff\x00"]  # bytes stay bytes
