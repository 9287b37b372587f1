"""The retrain's training table from Parquet written in the capture contract's layout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from server.capture.record import CaptureRecord, CaptureValue, partition_dir, records_to_table
from training.retrain.sink import open_sink
from training.retrain.table import TableError, TableSpec, Window, build_table

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
SPEC = TableSpec(model="fraud", columns=["amount", "hour"], input_name="features", task="binary")


def captured(root: Path, records: list[CaptureRecord], name: str = "part-0.parquet") -> None:
    """Write records (one version, one hour) where the capture writer puts them."""
    folder = root / partition_dir(records[0].model, records[0].version, records[0].ts)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(records), folder / name)


def labelled(root: Path, rows: list[tuple[str, int, float, datetime]], name: str = "labels-0.parquet") -> None:
    """Write labels in the contract's label layout."""
    folder = root / "fraud" / "labels" / f"hour={rows[0][3].strftime('%Y-%m-%dT%H')}"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "request_id": [r[0] for r in rows],
            "row": pa.array([r[1] for r in rows], pa.int32()),
            "label": pa.array([r[2] for r in rows], pa.float64()),
            "ts": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC")),
            "version": pa.array([1] * len(rows), pa.int32()),
        }
    )
    pq.write_table(table, folder / name)


def record(
    request_id: str, row: int, at: datetime, value: float, version: int = 1, **inputs: CaptureValue
) -> CaptureRecord:
    """A captured row with features amount=`value` and hour, or the `inputs` given."""
    values: dict[str, CaptureValue] = {"amount": value, "hour": float(at.hour)} if not inputs else dict(inputs)
    return CaptureRecord(
        request_id=request_id,
        row=row,
        ts=at,
        model="fraud",
        version=version,
        protocol="v1",
        inputs=values,
        outputs={"probability": 0.1},
    )


def test_rows_join_their_last_label_once_and_come_oldest_first(tmp_path: Path) -> None:
    captured(
        tmp_path, [record("b", 0, T0 + timedelta(minutes=2), 20.0), record("a", 0, T0, 10.0), record("a", 1, T0, 11.0)]
    )
    # the sink is at-least-once: the same row written again, and a label corrected later
    captured(tmp_path, [record("a", 0, T0, 10.0)], name="part-1.parquet")
    labelled(tmp_path, [("a", 0, 0.0, T0), ("a", 1, 1.0, T0), ("b", 0, 0.0, T0)])
    labelled(tmp_path, [("a", 0, 1.0, T0 + timedelta(hours=1)), ("zz", 0, 1.0, T0)], name="labels-1.parquet")

    table = build_table(open_sink(str(tmp_path)), SPEC, Window(T0 - timedelta(hours=1), T0 + timedelta(hours=1)))

    assert list(zip(table.request_ids, table.rows)) == [("a", 0), ("a", 1), ("b", 0)]
    assert table.targets.tolist() == [1.0, 1.0, 0.0]
    assert table.features.tolist() == [[10.0, 10.0], [11.0, 10.0], [20.0, 10.0]]
    assert (table.counts.captured_rows, table.counts.labels_read, table.counts.labelled_rows) == (3, 4, 3)


def test_window_keeps_rows_answered_in_it_across_hour_partitions(tmp_path: Path) -> None:
    times = [
        T0 - timedelta(hours=2),
        T0 + timedelta(minutes=59),
        T0 + timedelta(hours=1, minutes=1),
        T0 + timedelta(hours=3),
    ]
    for i, at in enumerate(times):
        captured(tmp_path, [record(f"r{i}", 0, at, float(i))])
    labelled(tmp_path, [(f"r{i}", 0, float(i % 2), T0) for i in range(4)])

    table = build_table(open_sink(str(tmp_path)), SPEC, Window(T0, T0 + timedelta(hours=2)))

    assert table.request_ids.tolist() == ["r1", "r2"]


def test_versions_are_read_together_and_one_without_the_features_is_counted(tmp_path: Path) -> None:
    captured(tmp_path, [record("v1", 0, T0, 1.0, version=1)])
    captured(tmp_path, [record("v2", 0, T0, 2.0, version=2, features=[2.0, 10.0])])  # the input tensor whole
    captured(tmp_path, [record("v3", 0, T0, 3.0, version=3, other=1.0)])
    labelled(tmp_path, [("v1", 0, 0.0, T0), ("v2", 0, 1.0, T0), ("v3", 0, 1.0, T0)])

    table = build_table(open_sink(str(tmp_path)), SPEC, Window(T0, T0 + timedelta(hours=1)))

    assert table.versions.tolist() == [1, 2]
    assert table.features.tolist() == [[1.0, 10.0], [2.0, 10.0]]
    assert table.counts.left_out == {"version 3 lacks the model's features": 1}


def test_missing_values_and_labels_of_another_task_are_left_out_and_counted(tmp_path: Path) -> None:
    captured(tmp_path, [record("ok", 0, T0, 1.0), record("gap", 0, T0, float("nan")), record("bad", 0, T0, 2.0)])
    labelled(tmp_path, [("ok", 0, 1.0, T0), ("gap", 0, 0.0, T0), ("bad", 0, 0.5, T0)])

    table = build_table(open_sink(str(tmp_path)), SPEC, Window(T0, T0 + timedelta(hours=1)))

    assert table.request_ids.tolist() == ["ok"]
    assert table.counts.left_out == {"missing or non-finite feature value": 1, "label not valid for a binary model": 1}


def test_multiclass_labels_map_to_the_models_class_indices(tmp_path: Path) -> None:
    captured(tmp_path, [record(f"r{i}", 0, T0, float(i)) for i in range(3)])
    labelled(tmp_path, [("r0", 0, 7.0, T0), ("r1", 0, 3.0, T0), ("r2", 0, 5.0, T0)])
    spec = TableSpec(model="fraud", columns=["amount", "hour"], input_name="x", task="multiclass", classes=[3, 7])

    table = build_table(open_sink(str(tmp_path)), spec, Window(T0, T0 + timedelta(hours=1)))

    assert table.targets.tolist() == [1, 0]  # 5 is no class of the model
    assert table.counts.left_out == {"label not valid for a multiclass model": 1}


def test_text_that_is_not_a_number_is_refused_naming_the_column(tmp_path: Path) -> None:
    captured(tmp_path, [record("r", 0, T0, 0.0, 1, amount="12.5", hour="noon")])
    labelled(tmp_path, [("r", 0, 1.0, T0)])
    with pytest.raises(TableError, match=r"in\.hour: text value 'noon'"):
        build_table(open_sink(str(tmp_path)), SPEC, Window(T0, T0 + timedelta(hours=1)))


def test_no_captures_or_labels_make_an_empty_table(tmp_path: Path) -> None:
    table = build_table(open_sink(str(tmp_path)), SPEC, Window(T0, T0 + timedelta(hours=1)))
    assert len(table) == 0 and table.counts.captured_rows == 0 and table.counts.labels_read == 0


def test_holdout_is_the_newest_slice() -> None:
    from training.retrain.table import TableCounts, TrainingTable

    n = 10
    table = TrainingTable(
        features=np.zeros((n, 2), np.float32),
        targets=np.zeros(n, np.float32),
        ts=np.arange(n).astype("datetime64[s]").astype("datetime64[us]"),
        versions=np.ones(n, np.int64),
        request_ids=np.array([str(i) for i in range(n)], dtype=object),
        rows=np.zeros(n, np.int64),
        counts=TableCounts(n, n, n),
    )
    train, holdout = table.split(0.2)
    assert train.tolist() == list(range(8)) and holdout.tolist() == [8, 9]
    with pytest.raises(ValueError, match="holdout fraction"):
        table.split(1.0)


def test_an_s3_sink_is_its_bucket_and_prefix_on_the_endpoint_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOTSERVE_CAPTURE_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    sink = open_sink("s3://captures/hotserve/")
    assert sink.root == "captures/hotserve" and sink.path("fraud", "labels") == "captures/hotserve/fraud/labels"
    assert sink.filesystem.type_name == "s3" and sink.filesystem.region == "eu-west-1"
    with pytest.raises(ValueError, match="names a bucket"):
        open_sink("s3:///prefix")
    with pytest.raises(ValueError, match="expected a directory or s3://"):
        open_sink("gs://bucket/prefix")
    with pytest.raises(ValueError, match="no capture sink"):
        open_sink("")
