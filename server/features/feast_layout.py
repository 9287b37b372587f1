"""Feast's Redis online-store layout, read without Feast: keys, hash fields, `Value` and `Timestamp`.

What `feast materialize` writes with `online_store: type: redis` (`feast/infra/online_stores/
redis.py`, `helpers.py`, `key_encoding_utils.py`), per entity one hash:

- key: the entity key serialized as version 3 (`<I` key count, per join key sorted by name `<I`
  STRING type, `<I` length, UTF-8 name; then per value `<I` value type, `<I` length, value bytes:
  `<q` for INT64, `<i` for INT32, UTF-8 for STRING), then the project name in UTF-8;
- field per feature: MurmurHash3 x86 32-bit (seed 0, unsigned) of `<feature_view>:<feature>`,
  as 4 little-endian bytes; value: a serialized `feast.types.Value`;
- field `_ts:<feature_view>`: a serialized `google.protobuf.Timestamp`, the row's event time.

`Value` (`protos/feast/types/Value.proto`) is a oneof; only its scalar fields are read here, by
a small decoder of the protobuf wire format (no generated code, no protobuf runtime, no Feast).
An empty `Value` (Feast's null) or `null_val` is missing, never zero.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from server.features.store import FeatureValue

SERIALIZATION_VERSION = 3
"""The only entity key serialization Feast still writes (its default since 0.50, available from
0.38); versions 1 and 2 wrote INT64 keys as 4 bytes and no name lengths, and are refused."""

VALUE_TYPES = {"BYTES": 1, "STRING": 2, "INT32": 3, "INT64": 4}
"""`feast.types.ValueType` numbers of the entity key types."""

VALUE_FIELDS = {
    1: "bytes_val",
    2: "string_val",
    3: "int32_val",
    4: "int64_val",
    5: "double_val",
    6: "float_val",
    7: "bool_val",
    8: "unix_timestamp_val",
    11: "bytes_list_val",
    12: "string_list_val",
    13: "int32_list_val",
    14: "int64_list_val",
    15: "double_list_val",
    16: "float_list_val",
    17: "bool_list_val",
    18: "unix_timestamp_list_val",
    19: "null_val",
    20: "map_val",
    21: "map_list_val",
    32: "json_val",
    34: "struct_val",
    36: "uuid_val",
    42: "list_val",
    44: "decimal_val",
    48: "zoned_timestamp_val",
}
"""Field numbers of `Value`'s oneof, for messages naming what was stored."""

_NULL_FIELD = 19
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_U32 = struct.Struct("<I")


class LayoutError(ValueError):
    """Bytes that are not what Feast writes (the message says what they are)."""


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned: what `mmh3.hash(key, signed=False)` returns."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    whole = len(data) - len(data) % 4
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def feature_field(feature_view: str, feature: str) -> bytes:
    """The hash field of one feature: Feast's `_mmh3(f"{feature_view}:{feature}")`."""
    return _U32.pack(murmur3_32(f"{feature_view}:{feature}".encode()))


def timestamp_field(feature_view: str) -> bytes:
    """The hash field holding a feature view's event time."""
    return f"_ts:{feature_view}".encode()


def entity_value_bytes(value_type: str, value: str | int) -> bytes:
    """One entity value as version 3 serializes it (after its type and length)."""
    if value_type == "STRING":
        assert isinstance(value, str)
        return value.encode()
    if value_type == "INT64":
        return struct.pack("<q", int(value))
    if value_type == "INT32":
        return struct.pack("<i", int(value))
    if value_type == "BYTES":
        assert isinstance(value, bytes)
        return value
    raise LayoutError(f"entity value type {value_type} is not one Feast serializes")


def key_names(join_keys: Sequence[str]) -> bytes:
    """The head of a version 3 entity key: the key count, then each join key's name (already sorted)."""
    out = [_U32.pack(len(join_keys))]
    for name in join_keys:
        encoded = name.encode()
        out.append(struct.pack("<II", VALUE_TYPES["STRING"], len(encoded)))
        out.append(encoded)
    return b"".join(out)


def typed_value(value_type: str, value: str | int) -> bytes:
    """One entity value of a version 3 entity key: its type, its length, its bytes."""
    encoded = entity_value_bytes(value_type, value)
    return struct.pack("<II", VALUE_TYPES[value_type], len(encoded)) + encoded


def serialize_entity_key(join_keys: Sequence[tuple[str, str, str | int]]) -> bytes:
    """Feast's `serialize_entity_key(..., entity_key_serialization_version=3)` of
    (join key, value type, value) triples: names sorted, then their values in that order."""
    ordered = sorted(join_keys, key=lambda item: item[0])
    head = key_names([name for name, _, _ in ordered])
    return head + b"".join(typed_value(value_type, value) for _, value_type, value in ordered)


def redis_key(project: str, join_keys: Sequence[tuple[str, str, str | int]]) -> bytes:
    """The Redis key of one entity's hash: serialized entity key, then the project name."""
    return serialize_entity_key(join_keys) + project.encode()


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(raw):
            raise LayoutError("truncated varint")
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise LayoutError("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_value(raw: bytes) -> FeatureValue | None:
    """A serialized `feast.types.Value` as a Python number, None when null or empty.

    Raises LayoutError for a value that is not a number (string, bytes, a list...), naming its field.
    """
    found: FeatureValue | None = None
    pos, end = 0, len(raw)
    while pos < end:
        tag, pos = _varint(raw, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            number, pos = _varint(raw, pos)
            if field in (3, 4, 8):  # int32, int64, unix_timestamp: sign-extended to 64 bits
                found = _signed64(number)
            elif field == 7:
                found = number != 0
            elif field == _NULL_FIELD:
                found = None
            else:
                raise LayoutError(f"unexpected varint field {field}")
        elif wire == 1 and field == 5:
            if pos + 8 > end:
                raise LayoutError("truncated double_val")
            found = _DOUBLE.unpack_from(raw, pos)[0]
            pos += 8
        elif wire == 5 and field == 6:
            if pos + 4 > end:
                raise LayoutError("truncated float_val")
            found = _FLOAT.unpack_from(raw, pos)[0]
            pos += 4
        else:
            name = VALUE_FIELDS.get(field, f"field {field}")
            raise LayoutError(f"Feast {name} is not a number")
    return found


def decode_timestamp(raw: bytes) -> float:
    """A serialized `google.protobuf.Timestamp` as Unix seconds."""
    seconds = nanos = 0
    pos, end = 0, len(raw)
    while pos < end:
        tag, pos = _varint(raw, pos)
        if tag == 0x08:
            number, pos = _varint(raw, pos)
            seconds = _signed64(number)
        elif tag == 0x10:
            nanos, pos = _varint(raw, pos)
        else:
            raise LayoutError(f"not a Timestamp (tag {tag})")
    return seconds + nanos / 1e9
