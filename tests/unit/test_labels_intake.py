"""Label intake over the embedded stores: join, duplicates, unknown ids, refusals, restarts."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from server.errors import InvalidInput, ModelNotFound
from server.labels.intake import LabelIntake
from server.labels.served_index import SqliteServedIndex
from server.metrics.instruments import Metrics
from server.quality.contract import QualityContracts
from server.quality.pairs import SqlitePairStore

sys.path.insert(0, str(Path(__file__).parent))
from labels_models import record, write_manifest  # noqa: E402

NOW = 1_800_000_000.0


class Files:
    """Collects the label tables intake appends (capture's writer in the server)."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, pa.Table]] = []

    def append_table(self, partition: str, table: pa.Table, *, model: str, dataset: str) -> bool:
        self.tables.append((partition, table))
        return True


def _intake(tmp_path: Path, files: Files | None = None, horizon_s: float = 3600.0) -> LabelIntake:
    db = tmp_path / "labels.sqlite3"
    index = SqliteServedIndex(db, horizon_s, clock=lambda: NOW)
    pairs = SqlitePairStore(db, 300.0, horizon_s, 1000, clock=lambda: NOW)
    return LabelIntake(index, pairs, QualityContracts(tmp_path / "repo"), Metrics(), files, clock=lambda: NOW)


@pytest.fixture
def intake(tmp_path: Path) -> LabelIntake:
    write_manifest(tmp_path / "repo", "m", 1, "binary")
    write_manifest(tmp_path / "repo", "m", 2, "binary")
    served = _intake(tmp_path)
    served.index.put_many(
        [
            record("a", 0, 1, {"probability": 0.9}, NOW - 10),
            record("a", 1, 1, {"probability": 0.2}, NOW - 10),
            record("b", 0, 1, {"probability": 0.6}, NOW - 5, shadow_version=2, shadow_outputs={"probability": 0.7}),
        ]
    )
    return served


def _json(labels: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(labels)


def test_labels_join_served_rows_and_unknown_ids_are_counted_and_named(intake: LabelIntake) -> None:
    result = intake.take(
        "m",
        _json(
            [
                {"request_id": "a", "label": 1},
                {"request_id": "a", "row": 1, "label": 0},
                {"request_id": "zz", "label": 1},
            ]
        ),
        "application/json",
    )
    assert (result.received, result.joined, result.unknown, result.duplicates) == (3, 2, 1, 0)
    assert result.unknown_ids == [{"request_id": "zz", "row": 0}]
    pairs = intake.pairs.load("m", 1, NOW - 3600, NOW + 1)
    assert sorted((p.request_id, p.row, p.label, p.score) for p in pairs) == [
        ("a", 0, 1.0, [0.9]),
        ("a", 1, 0.0, [0.2]),
    ]


def test_a_label_sent_twice_counts_once_and_the_later_wins(intake: LabelIntake) -> None:
    intake.take("m", b'{"request_id": "a", "label": 1}\n{"request_id": "a", "label": 0}\n', "application/x-ndjson")
    again = intake.take("m", _json([{"request_id": "a", "label": 1}]), "application/json")
    assert (again.joined, again.duplicates) == (0, 1)
    pairs = intake.pairs.load("m", 1, NOW - 3600, NOW + 1)
    assert [(p.request_id, p.label) for p in pairs] == [("a", 1.0)]


def test_the_shadow_score_is_joined_with_the_primary_answer(intake: LabelIntake) -> None:
    intake.take("m", _json([{"request_id": "b", "label": 1}]), "application/json")
    (pair,) = intake.pairs.load("m", 1, NOW - 3600, NOW + 1)
    assert (pair.shadow_version, pair.shadow_score, pair.score) == (2, [0.7], [0.6])


@pytest.mark.parametrize(
    ("label", "problem"),
    [(2, "0 or 1"), (0.5, "0 or 1"), ("yes", "expected a number"), (True, "expected a number")],
)
def test_a_label_of_the_wrong_type_refuses_the_whole_batch_naming_it(
    intake: LabelIntake, label: object, problem: str
) -> None:
    body = _json([{"request_id": "a", "label": 1}, {"request_id": "bad-id", "label": label}])
    with pytest.raises(InvalidInput) as refused:
        intake.take("m", body, "application/json")
    assert "bad-id" in refused.value.message and problem in refused.value.message
    assert refused.value.fields["refused"][0]["request_id"] == "bad-id"
    assert intake.pairs.load("m", 1, NOW - 3600, NOW + 1) == []  # the valid label was not taken either


def test_nan_is_refused_in_csv_and_parquet(intake: LabelIntake) -> None:
    with pytest.raises(InvalidInput, match="'nan-id'"):
        intake.take("m", b"request_id,row,label\na,0,1\nnan-id,0,nan\n", "text/csv")
    sink = io.BytesIO()
    pq.write_table(pa.table({"request_id": ["a", "nan-id"], "label": [1.0, math.nan]}), sink)
    with pytest.raises(InvalidInput, match="not a finite number"):
        intake.take("m", sink.getvalue(), "application/vnd.apache.parquet")


def test_csv_and_parquet_labels_join_like_json(intake: LabelIntake) -> None:
    assert intake.take("m", b"request_id,row,label,ts\na,1,0,2027-01-15T08:00:00Z\n", "text/csv").joined == 1
    sink = io.BytesIO()
    pq.write_table(pa.table({"request_id": ["a"], "row": pa.array([0], pa.int32()), "label": [1]}), sink)
    assert intake.take("m", sink.getvalue(), "application/parquet").joined == 1


def test_malformed_bodies_and_unknown_models_are_refused(intake: LabelIntake) -> None:
    with pytest.raises(InvalidInput, match="not JSON"):
        intake.take("m", b"[{", "application/json")
    with pytest.raises(InvalidInput, match="Content-Type"):
        intake.take("m", b"x", "text/plain")
    with pytest.raises(InvalidInput, match="request_id"):
        intake.take("m", _json([{"request_id": 7, "label": 1}]), "application/json")
    with pytest.raises(ModelNotFound):
        intake.take("nope", _json([{"request_id": "a", "label": 1}]), "application/json")


def test_rows_answered_before_a_restart_still_join(intake: LabelIntake, tmp_path: Path) -> None:
    intake.index.close()
    intake.pairs.close()
    reopened = _intake(tmp_path)
    assert reopened.take("m", _json([{"request_id": "a", "row": 1, "label": 0}]), "application/json").joined == 1


def test_rows_older_than_the_label_horizon_are_unknown(tmp_path: Path) -> None:
    write_manifest(tmp_path / "repo", "m", 1, "binary")
    intake = _intake(tmp_path, horizon_s=60.0)
    intake.index.put_many([record("old", 0, 1, {"probability": 0.5}, NOW - 120)])
    result = intake.take("m", _json([{"request_id": "old", "label": 1}]), "application/json")
    assert (result.joined, result.unknown) == (0, 1)


def test_labels_are_written_as_label_files_by_hour_with_the_answering_version(tmp_path: Path) -> None:
    write_manifest(tmp_path / "repo", "m", 1, "binary")
    files = Files()
    intake = _intake(tmp_path, files)
    intake.index.put_many([record("a", 0, 1, {"probability": 0.9}, NOW - 10)])
    body = _json([{"request_id": "a", "label": 1, "ts": NOW}, {"request_id": "x", "label": 0, "ts": NOW}])
    assert intake.take("m", body, "application/json").written == 2
    ((partition, table),) = files.tables
    assert partition == "m/labels/hour=2027-01-15T08"
    assert table.column_names == ["request_id", "row", "label", "ts", "version"]
    assert table.column("version").to_pylist() == [1, None]
    assert table.column("label").to_pylist() == [1.0, 0.0]


def test_multiclass_labels_are_class_names_when_the_model_lists_them(tmp_path: Path) -> None:
    write_manifest(tmp_path / "repo", "c", 1, "multiclass", classes=["cat", "dog", "eel"])
    intake = _intake(tmp_path)
    intake.index.put_many([record("a", 0, 1, {"probabilities": [0.1, 0.8, 0.1], "label": "dog"}, NOW - 1, model="c")])
    assert intake.take("c", _json([{"request_id": "a", "label": "dog"}]), "application/json").joined == 1
    (pair,) = intake.pairs.load("c", 1, NOW - 3600, NOW + 1)
    assert (pair.label, pair.score) == (1.0, [0.1, 0.8, 0.1])
    with pytest.raises(InvalidInput, match="not a class"):
        intake.take("c", _json([{"request_id": "a", "label": "cow"}]), "application/json")


def test_regression_labels_take_any_finite_number(tmp_path: Path) -> None:
    write_manifest(tmp_path / "repo", "r", 1, "regression")
    intake = _intake(tmp_path)
    intake.index.put_many([record("a", 0, 1, {"prediction": 3.5}, NOW - 1, model="r")])
    assert intake.take("r", _json([{"request_id": "a", "label": -2.25}]), "application/json").joined == 1


def test_a_full_window_drops_and_counts_further_labels(tmp_path: Path) -> None:
    write_manifest(tmp_path / "repo", "m", 1, "binary")
    db = tmp_path / "labels.sqlite3"
    index = SqliteServedIndex(db, 3600.0, clock=lambda: NOW)
    pairs = SqlitePairStore(db, 300.0, 3600.0, max_pairs=2, clock=lambda: NOW)
    intake = LabelIntake(index, pairs, QualityContracts(tmp_path / "repo"), Metrics(), clock=lambda: NOW)
    index.put_many([record(f"r{i}", 0, 1, {"probability": 0.5}, NOW - 1) for i in range(3)])
    result = intake.take("m", _json([{"request_id": f"r{i}", "label": 1} for i in range(3)]), "application/json")
    assert (result.joined, result.dropped) == (2, 1)
