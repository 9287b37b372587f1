"""Feature values against their declared types, the stored JSON form, and table rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.contract.manifest import FeatureView, StoredFeature
from server.errors import FeatureValueInvalid
from server.features.store import EntityRow, EntityWrite
from server.features.table import TableError, check_columns, read_table, table_rows
from server.features.values import decode_stored, encode_stored, parse_value

VIEW = FeatureView(
    name="cust",
    entity_key="id",
    entity_key_type="INT64",
    features=[
        StoredFeature(name="age"),
        StoredFeature(name="n", datatype="INT8"),
        StoredFeature(name="vip", datatype="BOOL"),
    ],
)


@pytest.mark.parametrize(
    ("datatype", "value", "text_ok", "parsed"),
    [
        ("FP32", 1, False, 1.0),
        ("INT8", 3.0, False, 3),
        ("BOOL", True, False, True),
        ("FP32", " 2.5 ", True, 2.5),
        ("INT64", "-7", True, -7),
        ("BOOL", "0", True, False),
    ],
)
def test_values_of_the_declared_type_parse(datatype: str, value: object, text_ok: bool, parsed: object) -> None:
    assert parse_value(datatype, value, text_ok) == parsed


@pytest.mark.parametrize(
    ("datatype", "value", "text_ok", "problem"),
    [
        ("FP32", "1.5", False, "expected FP32, got '1.5'"),
        ("FP32", float("nan"), False, "expected a finite FP32"),
        ("FP32", 1e39, False, "expected a finite FP32"),
        ("INT8", 300, False, "out of range"),
        ("INT64", 2.5, False, "expected INT64, got 2.5"),
        ("INT64", True, False, "expected INT64, got True"),
        ("BOOL", 1, False, "expected BOOL, got 1"),
        ("FP32", "abc", True, "expected FP32, got 'abc'"),
    ],
)
def test_values_that_do_not_parse_say_why(datatype: str, value: object, text_ok: bool, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(".", r"\.")):
        parse_value(datatype, value, text_ok)


def test_the_stored_form_round_trips_and_leaves_absent_features_out() -> None:
    raw = encode_stored(EntityWrite("7", {"age": 1.5, "n": 2, "vip": False}, 100.0))
    assert decode_stored("k", raw, VIEW) == EntityRow({"age": 1.5, "n": 2, "vip": False}, 100.0)
    assert decode_stored("k", b'{"age": 2, "_event_time": 5}', VIEW) == EntityRow({"age": 2.0}, 5.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "stored feature value at key 'k': not a JSON object: b'not json'"),
        (b'{"age": 1}', "stored feature value at key 'k', feature '_event_time': expected Unix seconds"),
        (b'{"n": "x", "_event_time": 1}', "stored feature value at key 'k', feature 'n': expected INT8, got 'x'"),
    ],
)
def test_a_malformed_stored_value_names_key_and_feature(raw: bytes, message: str) -> None:
    error = decode_stored("k", raw, VIEW)
    assert isinstance(error, FeatureValueInvalid) and error.message.startswith(message)


def test_table_rows_keep_the_latest_row_per_entity_and_reject_bad_rows_by_number(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "id,age,n,vip,ts\n"
        "1,30,1,true,2026-01-01T00:00:00Z\n"
        "1,31,2,false,2026-01-02T00:00:00Z\n"
        "2,40,1000,0,100\n"
        "x,1,1,1,100\n"
        "3,,1,1,100\n"
        "4,1,1,1,yesterday\n"
        "5,50,5,1,100\n"
    )
    columns, rows = read_table(str(path))
    check_columns(VIEW, columns, "ts", str(path))
    checked = table_rows(VIEW, rows, "ts")
    assert checked.read == 7
    assert [(w.entity, w.values["age"]) for w in checked.writes] == [("1", 31.0), ("5", 50.0)]
    assert checked.rejected == [
        (3, "n: expected INT8, got 1000 (out of range)"),
        (4, "id: expected an integer, got 'x'"),
        (5, "age: missing"),
        (6, "event time: expected Unix seconds or an ISO-8601 time, got 'yesterday'"),
    ]
    with pytest.raises(TableError, match=r"columns \['event_time'\] of feature view cust:v1 missing"):
        check_columns(VIEW, columns, "event_time", str(path))
