"""The served index's entries, encoded from a batch's columns (`ServedRows`), as a label reads them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from server.capture.record import CaptureRecord, ServedRows
from server.labels.served_index import ServedEntry, SqliteServedIndex, encode_entries

TS = datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)


def record(request_id: str, row: int, outputs: dict[str, object], **shadow: object) -> CaptureRecord:
    return CaptureRecord(request_id, row, TS, "m", 3, "v2", {"x": 1.0}, outputs, **shadow)  # type: ignore[arg-type]


def test_each_rows_entry_keeps_its_numeric_and_text_outputs_and_the_shadows_answer_not_text_lists() -> None:
    outputs = {"p": 0.25, "scores": [0.5, 1.5], "label": "dog", "tags": ["a", "b"]}
    rows = ServedRows.of_records(
        [
            record("a", 0, outputs),
            record("a", 1, {**outputs, "p": 0.75}, shadow_version=4, shadow_outputs={"p": 0.5, "label": "cat"}),
        ]
    )[0]
    first, second = (ServedEntry.decode(raw) for raw in encode_entries(rows))
    assert first == ServedEntry(3, TS.timestamp(), {"p": 0.25, "scores": [0.5, 1.5], "label": "dog"})
    assert second == ServedEntry(
        3, TS.timestamp(), {"p": 0.75, "scores": [0.5, 1.5], "label": "dog"}, 4, {"p": 0.5, "label": "cat"}
    )


def test_one_output_without_shadow_encodes_as_the_entry_would(tmp_path: Path) -> None:
    rows = ServedRows.of_records([record(f"r{i}", 0, {"p": i / 4}) for i in range(3)])[0]
    assert encode_entries(rows) == [ServedEntry(3, TS.timestamp(), {"p": i / 4}).encode() for i in range(3)]
    index = SqliteServedIndex(tmp_path / "labels.sqlite3", 3600.0, clock=TS.timestamp)
    index.put_rows(rows)
    assert index.get_many("m", [("r2", 0), ("r2", 1), ("r0", 0)]) == [
        ServedEntry(3, TS.timestamp(), {"p": 0.5}),
        None,
        ServedEntry(3, TS.timestamp(), {"p": 0.0}),
    ]
    index.close()
