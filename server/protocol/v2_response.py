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


def _json_data(array: np.ndarray, name: str) -> Any:
    if array.dtype.kind in "OSU":
        try:
            return [item.decode() if isinstance(item, bytes) else str(item) for item in array.ravel()]
        except UnicodeDecodeError:
            raise InvalidInput(
                f"outputs.{name}", detail="holds non-UTF-8 bytes; request it with parameters.binary_data=true"
            ) from None
    return np.ascontiguousarray(array).ravel()
