"""Build request tensors from JSON values or binary bytes and check them against the model input.

Numbers are checked by numpy kind, not by casting: a string, null, bool-for-number,
or float-for-integer is refused rather than silently coerced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server.errors import InvalidInput
from server.protocol.datatypes import element_count, tensor_from_bytes
from server.protocol.schema import InputSchema

_ALLOWED_KINDS: dict[str, str] = {
    "BOOL": "b",
    "FP16": "iuf",
    "FP32": "iuf",
    "FP64": "iuf",
    "INT8": "iu",
    "INT16": "iu",
    "INT32": "iu",
    "INT64": "iu",
    "UINT8": "iu",
    "UINT16": "iu",
    "UINT32": "iu",
    "UINT64": "iu",
}
_KIND_NAMES = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "floats",
    "U": "strings",
    "S": "bytes",
    "O": "mixed or null values",
}


def check_header(schema: InputSchema, datatype: Any, shape: Any, field: str) -> list[int]:
    """Validate a tensor's declared datatype and shape against the model input; returns the shape."""
    if datatype != schema.datatype:
        raise InvalidInput(f"{field}.datatype", expected=schema.datatype, got=repr(datatype))
    expected = schema.spec.shape
    if not isinstance(shape, list) or len(shape) != len(expected) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(
            f"{field}.shape", expected=f"{len(expected)} non-negative dims like {expected}", got=repr(shape)
        )
    for axis, (want, got) in enumerate(zip(expected, shape)):
        if want != -1 and want != got:
            raise InvalidInput(f"{field}.shape", expected=str(expected), got=f"{shape} (axis {axis} is {got})")
    if shape[0] == 0:
        raise InvalidInput(f"{field}.shape", expected="at least one row", got=repr(shape))
    return shape


def tensor_from_json(schema: InputSchema, shape: list[int], data: Any, field: str) -> np.ndarray:
    """Turn a JSON `data` value (flat or nested, row-major) into a tensor of `shape`."""
    count = element_count(shape)
    if schema.datatype == "BYTES":
        array = _bytes_from_json(data, field)
    else:
        array = _numbers_from_json(schema, data, field)
    if array.size != count:
        raise InvalidInput(f"{field}.data", expected=f"{count} values for shape {shape}", got=f"{array.size} values")
    array = array.reshape(shape)
    if schema.finite:
        check_finite(array, f"{field}.data")
    return array


def tensor_from_binary(schema: InputSchema, shape: list[int], raw: memoryview, field: str) -> np.ndarray:
    """Turn binary extension bytes into a tensor of `shape`.

    BYTES elements must be UTF-8: the runtime hands them to onnxruntime string tensors,
    and one undecodable element found there would fail the whole shared batch with a 500.
    """
    array = tensor_from_bytes(raw, schema.datatype, shape, f"{field}.parameters.binary_data_size")
    if schema.datatype == "BYTES":
        _check_utf8(array, f"{field}.data")
    elif schema.finite:
        check_finite(array, f"{field}.data")
    return array


def check_finite(array: np.ndarray, field: str) -> None:
    """Refuse NaN/Inf in a floating-point tensor, naming the first offending row."""
    if array.dtype.kind != "f" or array.size == 0:
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        value = array[tuple(bad)]
        raise InvalidInput(field, expected="finite numbers", got=f"{value} at index {bad.tolist()}")


def _check_utf8(array: np.ndarray, field: str) -> None:
    for index, item in enumerate(array.ravel()):
        try:
            item.decode()
        except UnicodeDecodeError as error:
            raise InvalidInput(
                field, expected="UTF-8 text in every BYTES element", got=f"{error.reason} in element {index}"
            ) from None


def _numbers_from_json(schema: InputSchema, data: Any, field: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInput(f"{field}.data", expected="a list of values", got=type(data).__name__)
    try:
        raw = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"{field}.data", expected="a flat or evenly nested list", got="ragged nesting") from None
    allowed = _ALLOWED_KINDS[schema.datatype]
    if raw.dtype.kind not in allowed and raw.size:
        raise InvalidInput(
            f"{field}.data", expected=f"{schema.datatype} values", got=_KIND_NAMES.get(raw.dtype.kind, str(raw.dtype))
        )
    target = schema.dtype
    if target.kind in "iu" and raw.size:
        info = np.iinfo(target)
        low, high = raw.min(), raw.max()
        if low < info.min or high > info.max:
            raise InvalidInput(
                f"{field}.data",
                expected=f"{schema.datatype} values in [{info.min}, {info.max}]",
                got=f"values in [{low}, {high}]",
            )
    with np.errstate(over="ignore"):  # overflow becomes inf, which the finite rule reports
        return raw.astype(target, copy=False)


def _bytes_from_json(data: Any, field: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInput(f"{field}.data", expected="a list of strings", got=type(data).__name__)
    flat = _flatten(data)
    out = np.empty(len(flat), dtype=object)
    for i, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidInput(
                f"{field}.data", expected="BYTES values as strings", got=f"{type(item).__name__} at index {i}"
            )
        out[i] = item.encode()
    return out


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat
