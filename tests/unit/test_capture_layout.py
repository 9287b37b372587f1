"""Capture columns of a version and the conversion of captured requests into them (writer side)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from server.capture.captured import Captured
from server.capture.layout import VersionLayout
from server.capture.record import CaptureRecord, ServedRows, records_to_table
from server.contract.manifest import BatchingPolicy, FeatureSpec
from tests.fakes import make_manifest

SPEC = FeatureSpec(input="x", columns=["age", "amount", "hour"], request_features=["age", "amount", "hour"])
TABULAR = make_manifest(
    "fraud", [("x", "FP32", [-1, 3])], [("probability", "FP32", [-1, 1]), ("scores", "FP32", [-1, 2])], 3, SPEC
)
TS = 1_767_225_600.25  # 2026-01-01T00:00:00.25Z


def captured(
    request_id: str, x: np.ndarray, probability: np.ndarray, scores: np.ndarray, protocol: str = "v1"
) -> Captured:
    rows = x.shape[0]
    return Captured(
        request_id, TS, TABULAR, protocol, {"x": x}, {"probability": probability, "scores": scores}, rows, 0
    )


def test_a_feature_input_becomes_one_column_per_feature_and_outputs_scalar_or_list_by_shape() -> None:
    layout = VersionLayout.of(TABULAR)
    assert layout.schema.names == [
        "request_id",
        "row",
        "ts",
        "model",
        "version",
        "protocol",
        "in.age",
        "in.amount",
        "in.hour",
        "out.probability",
        "out.scores",
        "shadow_version",
        "shadow.probability",
        "shadow.scores",
    ]
    assert layout.schema.field("out.probability").type == pa.float64()
    assert layout.schema.field("out.scores").type == pa.list_(pa.float64())
    assert layout.schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_rows_of_several_requests_keep_their_request_ids_row_numbers_and_values() -> None:
    x1 = np.array([[30, 12.5, 3], [41, 99.0, 23]], np.float32)
    x2 = np.array([[25, 1.0, 0]], np.float32)
    items = [
        captured("a", x1, np.array([[0.1], [0.9]], np.float32), np.array([[1, 2], [3, 4]], np.float32)),
        captured("b", x2, np.array([[0.5]], np.float32), np.array([[5, 6]], np.float32), protocol="grpc"),
    ]
    table = VersionLayout.of(TABULAR).table(items)
    assert table.column("request_id").to_pylist() == ["a", "a", "b"]
    assert table.column("row").to_pylist() == [0, 1, 0]
    assert table.column("protocol").to_pylist() == ["v1", "v1", "grpc"]
    assert table.column("in.amount").to_pylist() == [12.5, 99.0, 1.0]
    assert table.column("out.probability").to_pylist() == pytest.approx([0.1, 0.9, 0.5])
    assert table.column("out.scores").to_pylist() == [[1, 2], [3, 4], [5, 6]]
    assert table.column("ts").to_pylist()[0] == datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    assert table.column("shadow_version").null_count == 3


def test_a_shadow_answer_fills_its_requests_rows_and_leaves_the_others_null() -> None:
    x = np.ones((2, 3), np.float32)
    with_shadow = captured("a", x, np.array([[0.2], [0.4]], np.float32), np.zeros((2, 2), np.float32))
    without = captured("b", x[:1], np.array([[0.3]], np.float32), np.zeros((1, 2), np.float32))
    with_shadow.shadow_sent(4)
    loop = asyncio.new_event_loop()
    try:
        answer = loop.create_future()
        answer.set_result({"probability": np.array([[0.25], [0.45]], np.float32)})  # no `scores`
        with_shadow.shadow_done(answer)
    finally:
        loop.close()
    table = VersionLayout.of(TABULAR).table([with_shadow, without])
    assert table.column("shadow_version").to_pylist() == [4, 4, None]
    assert table.column("shadow.probability").to_pylist() == pytest.approx([0.25, 0.45, None])
    assert table.column("shadow.scores").to_pylist() == [None, None, None]
    served = ServedRows.of_table(table, "fraud", 3)
    assert served.shadow_versions == [4, 4, None]
    assert served.shadow_outputs is not None
    assert served.shadow_outputs["probability"] == pytest.approx([0.25, 0.45, None])


def test_text_tensors_and_multi_value_inputs_of_a_version_without_feature_spec() -> None:
    manifest = make_manifest(
        "multi", [("ids", "INT64", [-1, 4]), ("name", "BYTES", [-1, 1])], [("label", "BYTES", [-1])], 1
    )
    item = Captured(
        "r",
        TS,
        manifest,
        "v2",
        {"ids": np.arange(8, dtype=np.int64).reshape(2, 4), "name": np.array([[b"ann"], [b"bob"]], dtype=object)},
        {"label": np.array([b"yes", b"no"], dtype=object)},
        2,
        0,
    )
    table = VersionLayout.of(manifest).table([item])
    assert table.column("in.ids").to_pylist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert table.column("in.name").to_pylist() == ["ann", "bob"]
    assert table.column("out.label").to_pylist() == ["yes", "no"]


def test_a_version_without_batch_axis_captures_the_whole_tensor_as_one_row() -> None:
    manifest = make_manifest(
        "image",
        [("pixels", "FP32", [2, 2])],
        [("label", "INT64", [1])],
        1,
        batching=BatchingPolicy(batch_axis=False, enabled=False, max_batch_size=1, allow_split=False),
    )
    item = Captured("r", TS, manifest, "v2", {"pixels": np.eye(2, dtype=np.float32)}, {"label": np.array([7])}, 1, 0)
    table = VersionLayout.of(manifest).table([item])
    assert table.column("in.pixels").to_pylist() == [[1, 0, 0, 1]]
    assert table.column("out.label").to_pylist() == [7.0]


def test_a_request_that_does_not_fit_the_signature_is_refused_not_written_wrong() -> None:
    item = captured("a", np.ones((1, 3), np.float32), np.ones((1, 3), np.float32), np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match="out.probability"):
        VersionLayout.of(TABULAR).table([item])


def test_the_contract_record_of_a_row_converts_to_the_writers_table_and_both_give_the_same_served_rows() -> None:
    x = np.array([[30, 12.5, 3]], np.float32)
    table = VersionLayout.of(TABULAR).table(
        [captured("a", x, np.array([[0.75]], np.float32), np.array([[1, 2]], np.float32))]
    )
    record = CaptureRecord(
        request_id="a",
        row=0,
        ts=datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC),
        model="fraud",
        version=3,
        protocol="v1",
        inputs={"age": 30.0, "amount": 12.5, "hour": 3.0},
        outputs={"probability": 0.75, "scores": [1.0, 2.0]},
    )
    again = records_to_table([record])
    assert again.drop_columns([n for n in again.column_names if n.startswith("shadow")]).equals(
        table.drop_columns([n for n in table.column_names if n.startswith("shadow")])
    )
    served = ServedRows.of_table(table, "fraud", 3)
    assert served == ServedRows.of_records([record])[0]
    assert (served.request_ids, served.rows, served.ts) == (["a"], [0], [TS])
    assert served.outputs == {"probability": [0.75], "scores": [[1.0, 2.0]]}
    assert served.shadow_versions is None and served.shadow_outputs is None
    assert not math.isnan(served.outputs["probability"][0])  # type: ignore[arg-type]
