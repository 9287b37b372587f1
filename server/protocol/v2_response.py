"""v2 infer response: the requested outputs as JSON, or JSON + binary tensor data.

Numbers go straight from numpy through orjson (no Python lists, no pydantic).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from server.errors import InvalidInput
from server.protocol.datatypes import tensor_to_bytes, v2_datatype
from server.protocol.v2_request import InferRequest

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def encode_infer_response(
    model_name: str, model_version: int, request: InferRequest, results: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """Serialise the response; returns the body and, when binary outputs follow it, the JSON length."""
    if not request.parameters and (request.id is None or type(request.id) is str):
        plain = _plain_json_response(model_name, model_version, request, results)
        if plain is not None:
            return plain, None
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for wanted in request.outputs:
        array = results[wanted.name]
        entry: dict[str, Any] = {"name": wanted.name, "datatype": v2_datatype(array.dtype), "shape": list(array.shape)}
        if wanted.binary:
            raw = tensor_to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(array, wanted.name)
        outputs.append(entry)

    doc: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.id is not None:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = request.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_DUMP_OPTIONS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


_NUMBER_KINDS = frozenset("biuf")
_HEADS: dict[tuple[str, int], bytes] = {}
_OUTPUT_HEADS: dict[tuple[str, np.dtype], bytes] = {}
_MAX_HEADS = 1024
"""Entries are per served version and per output name and dtype; the bound only guards memory."""


def _head(model_name: str, model_version: int) -> bytes:
    key = (model_name, model_version)
    head = _HEADS.get(key)
    if head is None:
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        head = _HEADS[key] = orjson.dumps({"model_name": model_name, "model_version": str(model_version)})[:-1]
    return head


def _output_head(name: str, dtype: np.dtype) -> bytes:
    key = (name, dtype)
    head = _OUTPUT_HEADS.get(key)
    if head is None:
        if len(_OUTPUT_HEADS) >= _MAX_HEADS:
            _OUTPUT_HEADS.clear()
        head = _OUTPUT_HEADS[key] = orjson.dumps({"name": name, "datatype": v2_datatype(dtype)})[:-1] + b',"shape":'
    return head


def _plain_json_response(
    model_name: str, model_version: int, request: InferRequest, results: dict[str, np.ndarray]
) -> bytes | None:
    """The body `encode_infer_response` builds, byte for byte, when every output is numbers sent as
    JSON and the request has no parameters: the constant parts (model, version, each output's
    name and datatype) as cached bytes, only the shape and the numbers encoded per request.
    None for anything else."""
    if not request.outputs:
        return None
    parts = [_head(model_name, model_version)]
    if request.id is not None:
        parts.append(b',"id":' + orjson.dumps(request.id))
    separator = b',"outputs":['
    for wanted in request.outputs:
        array = results[wanted.name]
        if wanted.binary or array.dtype.kind not in _NUMBER_KINDS:
            return None
        data = array if array.ndim == 1 and array.flags.c_contiguous else np.ascontiguousarray(array).ravel()
        parts += (
            separator,
            _output_head(wanted.name, array.dtype),
            orjson.dumps(array.shape),
            b',"data":',
            orjson.dumps(data, option=_DUMP_OPTIONS),
            b"}",
        )
        separator = b","
    parts.append(b"]}")
    return b"".join(parts)


def _json_data(array: np.ndarray, name: str) -> Any:
    if array.dtype.kind in "OSU":
        try:
            return [item.decode() if isinstance(item, bytes) else str(item) for item in array.ravel()]
        except UnicodeDecodeError:
            raise InvalidInput(
                f"outputs.{name}", detail="holds non-UTF-8 bytes; request it with parameters.binary_data=true"
            ) from None
    return np.ascontiguousarray(array).ravel()
