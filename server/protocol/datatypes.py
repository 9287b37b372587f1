"""v2 datatypes <-> numpy, and the raw byte layout of the binary tensor data extension.

Every v2 type maps to one numpy dtype. BYTES tensors are numpy object arrays of
`bytes`; on the wire (binary extension) each element is a 4-byte little-endian
length followed by its bytes, as Triton and KServe lay them out.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from server.contract.manifest import NUMPY_DTYPES
from server.errors import InvalidInput

__all__ = ["NUMPY_DTYPES", "numpy_dtype", "v2_datatype", "tensor_to_bytes", "tensor_from_bytes"]


_DATATYPES_BY_DTYPE: Final[dict[np.dtype, str]] = {dt: name for name, dt in NUMPY_DTYPES.items()}
_LENGTH = struct.Struct("<I")


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a v2 datatype; InvalidInput for a name outside the v2 set."""
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        raise InvalidInput("datatype", expected=f"one of {sorted(NUMPY_DTYPES)}", got=repr(datatype)) from None


def v2_datatype(dtype: np.dtype) -> str:
    """The v2 datatype of a numpy dtype (str/bytes arrays count as BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPES_BY_DTYPE[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no v2 datatype") from None


def tensor_to_bytes(array: np.ndarray) -> bytes:
    """Serialise a tensor for the binary extension: row-major raw values or length-prefixed BYTES."""
    if array.dtype == object:
        parts: list[bytes] = []
        for item in array.ravel():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(array).tobytes()


def tensor_from_bytes(raw: bytes | memoryview, datatype: str, shape: list[int], field: str) -> np.ndarray:
    """Parse binary extension bytes into a tensor of `shape`; InvalidInput if the size is wrong."""
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_elements(raw, count, field).reshape(shape)
    dtype = numpy_dtype(datatype)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(field, expected=f"{expected} bytes for {datatype} shape {shape}", got=f"{len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _bytes_elements(raw: bytes | memoryview, count: int, field: str) -> np.ndarray:
    view = memoryview(raw)
    # Elements are collected before the array is made: a client's shape alone (say 2**40
    # elements) never sizes an allocation; the bytes run out after len(raw) / 4 elements at most.
    items: list[bytes] = []
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(
                field, expected=f"{count} length-prefixed BYTES elements", got=f"data ending inside element {i}"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                field, expected=f"{length} bytes for BYTES element {i}", got=f"{len(view) - offset} bytes left"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise InvalidInput(field, expected=f"{offset} bytes for {count} BYTES elements", got=f"{len(view)} bytes")
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def element_count(shape: list[int]) -> int:
    """Number of values in a tensor of `shape`."""
    count = 1
    for dim in shape:
        count *= dim
    return count
