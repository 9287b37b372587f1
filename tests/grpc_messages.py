"""Generated ModelInferRequests for the fuzz tests: a valid request for a model, then none to a few
random mutations (names, datatypes, shapes, contents, raw bytes, parameters, outputs).

Works with any generated class of the message (hotserve's own, or Triton's in
`tritonclient.grpc.service_pb2`): the field names and numbers are the same.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

Inputs = list[tuple[str, str, list[int]]]
"""A model's inputs: name, datatype, shape with -1 for the batch axis."""

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32"]
DATATYPES += ["FP64", "BYTES", "", "fp32", "FP8", "STRING"]
DIMS = [-1, 0, 1, 2, 3, 4, 5, 2**31, 2**62]
CONTENTS = ["bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents"]
CONTENTS += ["fp32_contents", "fp64_contents", "bytes_contents"]
_TYPED = {"FP32": "fp32_contents", "INT64": "int64_contents", "BYTES": "bytes_contents", "FP64": "fp64_contents"}
_PARAMETERS = ["timeout", "binary_data_output", "priority", "x"]


def random_infer_request(rng: random.Random, cls: Any, models: dict[str, Inputs]) -> Any:
    """A valid request for one of `models`, then 0-3 random mutations."""
    model = rng.choice(list(models))
    request = _valid(rng, cls, model, models[model])
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        rng.choice(_MUTATIONS)(rng, request)
    return request


def _valid(rng: random.Random, cls: Any, model: str, inputs: Inputs) -> Any:
    request = cls(model_name=model)
    rows = rng.choice([1, 2, 3])
    raw = rng.random() < 0.5 or any(datatype not in _TYPED for _, datatype, _ in inputs)
    for name, datatype, shape in inputs:
        dims = [rows if d == -1 else d for d in shape]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=dims)
        count = int(np.prod(dims))
        if datatype == "BYTES":
            values: list[Any] = [rng.choice([b"", b"ab", "é".encode()]) for _ in range(count)]
            if raw:
                request.raw_input_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in values))
            else:
                tensor.contents.bytes_contents.extend(values)
            continue
        array = np.array([rng.choice([0, 1, 2]) for _ in range(count)]).astype(_DTYPES[datatype])
        if raw:
            request.raw_input_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, _TYPED[datatype]).extend(array.tolist())
    return request


_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}


def _rename_model(rng: random.Random, request: Any) -> None:
    request.model_name = rng.choice(["", "nope", "x" * 300])


def _version(rng: random.Random, request: Any) -> None:
    request.model_version = rng.choice(["1", "2", "0", "-1", "abc", "9" * 30])


def _rename_input(rng: random.Random, request: Any) -> None:
    if request.inputs:
        rng.choice(request.inputs).name = rng.choice(["", "zz", request.inputs[0].name])


def _datatype(rng: random.Random, request: Any) -> None:
    if request.inputs:
        rng.choice(request.inputs).datatype = rng.choice(DATATYPES)


def _shape(rng: random.Random, request: Any) -> None:
    if request.inputs:
        tensor = rng.choice(request.inputs)
        del tensor.shape[:]
        tensor.shape.extend(rng.choice(DIMS) for _ in range(rng.choice([0, 1, 2, 2, 3])))


def _drop_input(rng: random.Random, request: Any) -> None:
    if request.inputs:
        del request.inputs[rng.randrange(len(request.inputs))]


def _duplicate_input(rng: random.Random, request: Any) -> None:
    if request.inputs:
        request.inputs.append(rng.choice(request.inputs))


def _raw_bytes(rng: random.Random, request: Any) -> None:
    if request.raw_input_contents:
        index = rng.randrange(len(request.raw_input_contents))
        request.raw_input_contents[index] = rng.randbytes(rng.choice([0, 1, 3, 4, 8, 12, 16, 48]))
    else:
        request.raw_input_contents.append(rng.randbytes(rng.choice([0, 4, 16])))


def _contents(rng: random.Random, request: Any) -> None:
    if request.inputs:
        tensor = rng.choice(request.inputs)
        field = rng.choice(CONTENTS)
        getattr(tensor.contents, field).extend(_values(rng, field, rng.choice([0, 1, 2, 4, 6, 12])))


def _parameters(rng: random.Random, request: Any) -> None:
    _parameter(rng, request.parameters[rng.choice(_PARAMETERS)])


def _outputs(rng: random.Random, request: Any) -> None:
    output = request.outputs.add(name=rng.choice(["score", "a_sum", "c_same", "", "nope"]))
    if rng.random() < 0.5:
        _parameter(rng, output.parameters["binary_data"])


_MUTATIONS: list[Callable[[random.Random, Any], None]] = [
    _rename_model,
    _version,
    _rename_input,
    _datatype,
    _shape,
    _drop_input,
    _duplicate_input,
    _raw_bytes,
    _contents,
    _parameters,
    _outputs,
]


def _values(rng: random.Random, field: str, count: int) -> list[Any]:
    if field == "bool_contents":
        return [rng.random() < 0.5 for _ in range(count)]
    if field == "bytes_contents":
        return [rng.randbytes(rng.choice([0, 1, 3])) for _ in range(count)]
    if field in ("fp32_contents", "fp64_contents"):
        return [rng.choice([0.5, -2.0, 1e30, math.nan, math.inf, -math.inf]) for _ in range(count)]
    low, high = {
        "int_contents": (-(2**31), 2**31 - 1),
        "int64_contents": (-(2**63), 2**63 - 1),
        "uint_contents": (0, 2**32 - 1),
        "uint64_contents": (0, 2**64 - 1),
    }[field]
    return [rng.choice([low, high, 0, 1, 300]) for _ in range(count)]


def _parameter(rng: random.Random, parameter: Any) -> None:
    choice = rng.choice(["bool_param", "int64_param", "string_param", "double_param", "uint64_param", None])
    if choice is None:
        return  # an InferParameter with nothing set
    value = {
        "bool_param": rng.random() < 0.5,
        "int64_param": rng.choice([-1, 0, 1, 10**6, 2**62]),
        "string_param": rng.choice(["", "true", "soon"]),
        "double_param": rng.choice([0.5, math.nan]),
        "uint64_param": rng.choice([0, 2**64 - 1]),
    }[choice]
    setattr(parameter, choice, value)
