"""gRPC Open Inference Protocol messages <-> the decoded v2 request and its outputs.

A `ModelInferRequest` decodes into the same `InferRequest` as a REST body, through the same
checks (`InputSet`, `check_header`, `tensor_from_binary`, `tensor_from_values`), so a tensor is
refused for the same reason, naming the same field, whichever transport carried it. Inputs come
either all in `raw_input_contents` (one entry per input, in order; what tritonclient.grpc sends)
or each in its typed `contents` field (`fp32_contents` for FP32, ...; FP16 has none and must be
raw). Outputs go back raw, in `raw_output_contents`, when the request sent raw inputs or asked for
binary outputs (`binary_data_output`, or an output's `binary_data`), or when an output is FP16;
typed otherwise. Raw is all or nothing: `raw_output_contents` is positional over the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from server.errors import InvalidInput
from server.protocol.datatypes import tensor_to_bytes, v2_datatype
from server.protocol.proto import inference_pb2 as pb
from server.protocol.schema import InputSchema, ModelSchema
from server.protocol.tensors import check_header, tensor_from_binary, tensor_from_values
from server.protocol.v2_request import (
    InferRequest,
    InputSet,
    RequestedOutput,
    flag,
    requested_output_name,
    timeout_us,
)

TYPED_CONTENTS: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The `InferTensorContents` field of each datatype (the KServe v2 table; FP16 has none)."""
_CONTENTS_DTYPES: Final[dict[str, np.dtype]] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int64),  # widened first, so the range check sees the client's value
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint64),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}
_CONTENTS_FIELDS: Final = tuple(dict.fromkeys(TYPED_CONTENTS.values()))


def decode_model_infer(message: pb.ModelInferRequest, schema: ModelSchema) -> InferRequest:
    """Validate a ModelInferRequest against the model; InvalidInput naming the field otherwise."""
    items = message.inputs
    count = len(items)
    if not count:
        raise InvalidInput("inputs", expected="a non-empty list", got="an empty list")
    raw = message.raw_input_contents
    if raw and len(raw) != count:
        raise InvalidInput("raw_input_contents", expected=f"{count} entries, one per input", got=f"{len(raw)} entries")
    inputs = InputSet(schema)
    for index, item in enumerate(items):
        input_schema, field = inputs.spec(index, item.name)
        shape = check_header(input_schema, item.datatype, list(item.shape), field)
        if raw:
            if item.HasField("contents"):
                raise InvalidInput(f"{field}.contents", detail="given with raw_input_contents; send one or the other")
            tensor = tensor_from_binary(
                input_schema, shape, memoryview(raw[index]), field, size_field=f"raw_input_contents[{index}]"
            )
        else:
            tensor = _from_contents(input_schema, shape, item.contents, field)
        inputs.add(input_schema, field, tensor)
    tensors, rows = inputs.finish()
    given = message.parameters
    parameters = parameter_values(given, "parameters") if given else None
    binary_default = bool(raw) or flag(parameters, "binary_data_output", "parameters.binary_data_output")
    return InferRequest(
        id=message.id or None,
        parameters=parameters or None,
        inputs=tensors,
        rows=rows,
        outputs=_requested_outputs(message.outputs, binary_default, schema),
        timeout_us=timeout_us(parameters),
    )


def encode_model_infer(
    model_name: str, model_version: int, request: InferRequest, results: Mapping[str, np.ndarray]
) -> pb.ModelInferResponse:
    """The ModelInferResponse of the requested outputs, raw or typed (see the module docstring)."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=str(model_version), id=request.id or "")
    arrays = [(wanted.name, results[wanted.name]) for wanted in request.outputs]
    raw = any(wanted.binary for wanted in request.outputs) or any(array.dtype == np.float16 for _, array in arrays)
    for name, array in arrays:
        datatype = v2_datatype(array.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(tensor_to_bytes(array))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                item if isinstance(item, bytes) else str(item).encode() for item in array.ravel()
            )
        else:
            getattr(tensor.contents, TYPED_CONTENTS[datatype]).extend(array.ravel().tolist())
    return response


def parameter_values(parameters: Mapping[str, pb.InferParameter], field: str) -> dict[str, Any]:
    """`InferParameter`s as plain values (what the REST decoder reads from JSON)."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        if which is None:
            raise InvalidInput(f"{field}.{key}", expected="a value", got="an empty InferParameter")
        values[key] = getattr(parameter, which)
    return values


def _from_contents(schema: InputSchema, shape: list[int], contents: pb.InferTensorContents, field: str) -> np.ndarray:
    name = TYPED_CONTENTS.get(schema.datatype)
    if name is None:
        raise InvalidInput(
            f"{field}.contents", detail=f"{schema.datatype} has no typed contents; send it in raw_input_contents"
        )
    for other in _CONTENTS_FIELDS:
        if other != name and len(getattr(contents, other)):
            raise InvalidInput(f"{field}.contents", expected=f"{name} for {schema.datatype}", got=other)
    values = getattr(contents, name)
    if name == "bytes_contents":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        array = np.array(values, dtype=_CONTENTS_DTYPES[name])
    return tensor_from_values(schema, shape, array, f"{field}.contents.{name}")


def _requested_outputs(outputs: Any, binary_default: bool, schema: ModelSchema) -> list[RequestedOutput]:
    if not outputs:
        return [RequestedOutput(name, binary_default) for name in schema.output_names]
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, item in enumerate(outputs):
        name = requested_output_name(schema, index, item.name, seen)
        params = parameter_values(item.parameters, f"outputs.{name}.parameters")
        binary = binary_default
        if "binary_data" in params:
            binary = flag(params, "binary_data", f"outputs.{name}.parameters.binary_data")
        requested.append(RequestedOutput(name, binary))
    return requested
