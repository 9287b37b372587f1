"""Datatype map and binary tensor layout: every v2 type both ways, and malformed bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from server.errors import InvalidInput
from server.protocol.datatypes import NUMPY_DTYPES, numpy_dtype, tensor_from_bytes, tensor_to_bytes, v2_datatype

NUMERIC_SAMPLES: dict[str, list[object]] = {
    "BOOL": [True, False, True, True, False, False],
    "UINT8": [0, 1, 2, 127, 200, 255],
    "UINT16": [0, 1, 2, 300, 40000, 65535],
    "UINT32": [0, 1, 2, 70000, 3_000_000_000, 4_294_967_295],
    "UINT64": [0, 1, 2, 3, 2**40, 2**63],
    "INT8": [-128, -1, 0, 1, 2, 127],
    "INT16": [-32768, -1, 0, 1, 300, 32767],
    "INT32": [-(2**31), -1, 0, 1, 70000, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 1, 2**40, 2**63 - 1],
    "FP16": [-1.5, 0.0, 0.25, 1.0, 2.5, 65504.0],
    "FP32": [-1.5, 0.0, 0.1, 1.0, 3.25, 1e30],
    "FP64": [-1.5, 0.0, 0.1, 1.0, 3.25, 1e300],
}


def test_every_v2_datatype_has_a_numpy_dtype_and_maps_back() -> None:
    assert set(NUMPY_DTYPES) == set(NUMERIC_SAMPLES) | {"BYTES"}
    for datatype in NUMERIC_SAMPLES:
        assert v2_datatype(numpy_dtype(datatype)) == datatype
    assert v2_datatype(np.dtype(object)) == "BYTES"


def test_unknown_datatype_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInput, match="'FP8'"):
        numpy_dtype("FP8")


@pytest.mark.parametrize("datatype", sorted(NUMERIC_SAMPLES))
def test_numeric_tensor_round_trips_through_binary(datatype: str) -> None:
    array = np.asarray(NUMERIC_SAMPLES[datatype], dtype=NUMPY_DTYPES[datatype]).reshape(2, 3)
    raw = tensor_to_bytes(array)
    assert len(raw) == array.nbytes
    back = tensor_from_bytes(raw, datatype, [2, 3], "x")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_bytes_tensor_is_length_prefixed_little_endian() -> None:
    array = np.array([b"ab", b"", "c\u00e9".encode()], dtype=object).reshape(3, 1)
    raw = tensor_to_bytes(array)
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 3) + "c\u00e9".encode()
    back = tensor_from_bytes(raw, "BYTES", [3, 1], "x")
    assert back.shape == (3, 1)
    assert back.ravel().tolist() == [b"ab", b"", "c\u00e9".encode()]


def test_numeric_bytes_of_the_wrong_size_are_refused_with_both_sizes() -> None:
    raw = np.zeros(5, dtype=np.float32).tobytes()
    with pytest.raises(InvalidInput, match="expected 24 bytes for FP32 shape \\[2, 3\\], got 20 bytes"):
        tensor_from_bytes(raw, "FP32", [2, 3], "x")


@pytest.mark.parametrize(
    "raw, message",
    [
        (struct.pack("<I", 5) + b"abc", "expected 5 bytes for BYTES element 0, got 3 bytes left"),
        (struct.pack("<I", 1) + b"a" + b"\x01", "data ending inside element 1"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b" + b"zz", "expected 10 bytes for 2 BYTES"),
    ],
)
def test_malformed_bytes_elements_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        tensor_from_bytes(raw, "BYTES", [2], "x")
