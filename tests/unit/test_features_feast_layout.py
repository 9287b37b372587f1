"""Feast's Redis layout against bytes Feast 0.67.0 itself produced (`_redis_key`, `_mmh3`,
`Value.SerializeToString`, `Timestamp.SerializeToString`, printed from `.venv-feast`)."""

from __future__ import annotations

import pytest

from server.features.feast_layout import (
    LayoutError,
    decode_timestamp,
    decode_value,
    feature_field,
    murmur3_32,
    redis_key,
    timestamp_field,
)


@pytest.mark.parametrize(
    ("join_keys", "project", "expected"),
    [
        (
            [("driver_id", "INT64", 1001)],
            "shop",
            "0100000002000000090000006472697665725f69640400000008000000e90300000000000073686f70",
        ),
        (
            [("customer_id", "STRING", "c-7é")],
            "shop",
            "01000000020000000b000000637573746f6d65725f69640200000005000000632d37c3a973686f70",
        ),
        (  # join keys sorted by name, values follow in that order
            [("zone", "STRING", "n"), ("driver_id", "INT64", -5)],
            "p",
            "0200000002000000090000006472697665725f696402000000040000007a6f6e650400000008000000"
            "fbffffffffffffff02000000010000006e70",
        ),
        ([("k", "INT32", -7)], "p", "0100000002000000010000006b0300000004000000f9ffffff70"),
    ],
)
def test_redis_keys_equal_what_feast_writes(
    join_keys: list[tuple[str, str, str | int]], project: str, expected: str
) -> None:
    assert redis_key(project, join_keys).hex() == expected


@pytest.mark.parametrize(
    ("text", "field_hex", "unsigned"),
    [
        ("driver_stats:conv_rate", "fa731014", 336622586),
        ("driver_stats:trips", "426aa434", 883190338),
        ("a:b", "436844a2", 2722392131),
        ("fv:x1", "7c87642b", 728008572),
        ("fv:abcd", "0503a78d", 2376532741),
        ("fv:abcde", "28b886b1", 2978396200),
    ],
)
def test_feature_fields_are_feasts_unsigned_murmur3_little_endian(text: str, field_hex: str, unsigned: int) -> None:
    view, feature = text.split(":")
    assert murmur3_32(text.encode()) == unsigned
    assert feature_field(view, feature).hex() == field_hex


def test_an_empty_key_hashes_to_zero_and_the_timestamp_field_is_plain_text() -> None:
    assert murmur3_32(b"") == 0
    assert timestamp_field("driver_stats") == b"_ts:driver_stats"


@pytest.mark.parametrize(
    ("serialized", "value"),
    [
        ("29000000000000d03f", 0.25),
        ("350000c03f", 1.5),
        ("20fdffffffffffffffff01", -3),
        ("20808080808020", 2**40),
        ("18ffffffffffffffffff01", -1),
        ("4080e2cfaa06", 1700000000),
        ("290000000000000000", 0.0),
        ("2000", 0),
    ],
)
def test_numeric_values_decode_as_feast_wrote_them(serialized: str, value: float) -> None:
    decoded = decode_value(bytes.fromhex(serialized))
    assert decoded == value and type(decoded) is type(value)


def test_booleans_decode_as_booleans() -> None:
    assert decode_value(bytes.fromhex("3801")) is True
    assert decode_value(bytes.fromhex("3800")) is False


def test_an_empty_value_and_null_val_are_missing_not_zero() -> None:
    assert decode_value(b"") is None
    assert decode_value(bytes.fromhex("980100")) is None


def test_a_string_value_is_refused_naming_its_field() -> None:
    with pytest.raises(LayoutError, match="Feast string_val is not a number"):
        decode_value(bytes.fromhex("120178"))


def test_truncated_values_are_refused() -> None:
    with pytest.raises(LayoutError, match="truncated double_val"):
        decode_value(bytes.fromhex("29000000"))
    with pytest.raises(LayoutError, match="truncated varint"):
        decode_value(bytes.fromhex("20ff"))


def test_timestamps_decode_to_unix_seconds_with_nanos() -> None:
    assert decode_timestamp(bytes.fromhex("0880f2d6ca061080e59a77")) == 1767225600.25
    assert decode_timestamp(b"") == 0.0
    with pytest.raises(LayoutError, match="not a Timestamp"):
        decode_timestamp(bytes.fromhex("29000000000000d03f"))
