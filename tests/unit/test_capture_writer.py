"""The capture writer: partitions, rotation, the buffer bound, an unwritable sink and recovery,
label tables, the served index hook, and the shutdown flush (on a real local directory)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from server.capture.captured import Captured
from server.capture.record import ServedRows
from server.capture.sink import LocalSink
from server.capture.tap import CaptureTap
from server.capture.writer import CaptureWriter
from server.contract.manifest import FeatureSpec
from server.metrics.instruments import Metrics
from server.registry.served import ServedVersion
from tests.fakes import EchoRuntime, make_manifest, request

SPEC = FeatureSpec(input="x", columns=["a", "b", "c"], request_features=["a", "b", "c"])
MANIFEST = make_manifest("m", [("x", "FP32", [-1, 3])], [("y", "FP32", [-1, 3])], 2, features=SPEC)
HANG_GUARD_S = 60.0


def item(request_id: str, rows: int = 2, ts: float | None = None) -> Captured:
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    return Captured(request_id, time.time() if ts is None else ts, MANIFEST, "v2", {"x": x}, {"y": x * 2}, rows, 64)


def wait_for(condition: Callable[[], bool]) -> None:
    """Until `condition` holds (the writer thread's progress); a guard against hangs, never a pace."""
    give_up = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < give_up, "condition never held"
        time.sleep(0.01)


def rows_in(root: Path) -> pa.Table:
    return ds.dataset(root, format="parquet", partitioning="hive").to_table()


def files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def writers() -> Iterator[list[CaptureWriter]]:
    made: list[CaptureWriter] = []
    yield made
    for writer in made:
        writer.close(5)


def test_everything_accepted_is_written_on_close_in_hive_partitions(tmp_path: Path, metrics: Metrics) -> None:
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="pod-1")
    writer.start()
    for n in range(50):
        writer.submit(item(f"r{n}"))
    assert writer.close(10)
    (file,) = files(tmp_path)
    hour = time.strftime("%Y-%m-%dT%H", time.gmtime())
    assert file.parent.relative_to(tmp_path).as_posix() in {
        f"m/version=2/hour={hour}",
        f"m/version=2/hour={time.strftime('%Y-%m-%dT%H', time.gmtime(time.time() - 3600))}",
    }
    assert "pod-1" in file.name and not list(tmp_path.rglob(".*"))  # no temporary file left behind
    table = rows_in(tmp_path)
    assert table.num_rows == 100
    assert sorted(set(table.column("request_id").to_pylist())) == sorted(f"r{n}" for n in range(50))
    assert table.column("in.b").to_pylist()[:2] == [1.0, 4.0]
    assert sample(metrics, "hotserve_capture_written_records_total", model="m", dataset="capture") == 100
    assert sample(metrics, "hotserve_capture_files_total", model="m", dataset="capture") == 1
    assert sample(metrics, "hotserve_capture_buffered_records") == 0


def test_rows_of_different_hours_go_to_their_own_partitions(tmp_path: Path, metrics: Metrics) -> None:
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r")
    writer.submit(item("late", ts=1_767_229_199.0))  # 2026-01-01T00:59:59Z
    writer.submit(item("early", ts=1_767_229_200.0))  # 2026-01-01T01:00:00Z
    assert writer.close(10)
    assert [f.parent.name for f in files(tmp_path)] == ["hour=2026-01-01T00", "hour=2026-01-01T01"]


def test_a_partition_becomes_a_file_at_the_rotation_size(
    tmp_path: Path, metrics: Metrics, writers: list[CaptureWriter]
) -> None:
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r", rotate_bytes=1, rotate_age_s=3600)
    writers.append(writer)
    writer.start()
    writer.submit(item("a"))
    wait_for(lambda: len(files(tmp_path)) == 1)
    writer.submit(item("b"))
    wait_for(lambda: len(files(tmp_path)) == 2)
    assert rows_in(tmp_path).num_rows == 4


def test_a_partition_becomes_a_file_when_its_oldest_row_reaches_the_rotation_age(
    tmp_path: Path, metrics: Metrics, writers: list[CaptureWriter]
) -> None:
    now = [100.0]
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r", rotate_age_s=60, clock=lambda: now[0])
    writers.append(writer)
    writer.start()
    writer.submit(item("a"))
    wait_for(lambda: writer.held_records == 2 and not writer._queue)  # staged, not written
    assert files(tmp_path) == []
    now[0] += 60
    wait_for(lambda: len(files(tmp_path)) == 1 and writer.held_records == 0)


def test_beyond_the_buffer_bound_new_rows_are_dropped_and_counted_never_queued(
    tmp_path: Path, metrics: Metrics
) -> None:
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r", max_records=4)
    served = ServedVersion(MANIFEST, EchoRuntime(), metrics)
    tap = CaptureTap(writer, metrics)
    x = np.ones((2, 3), np.float32)
    for _ in range(3):
        tap.capture(served, "v2", request({"x": x}), {"y": x})
    assert writer.held_records == 4
    assert sample(metrics, "hotserve_capture_accepted_records_total", model="m") == 4
    assert (
        sample(metrics, "hotserve_capture_dropped_records_total", model="m", dataset="capture", reason="buffer_full")
        == 2
    )
    assert writer.close(10)
    assert rows_in(tmp_path).num_rows == 4


def test_the_drop_and_sink_error_series_start_at_zero_so_a_first_drop_or_refusal_is_an_increase(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A counter series born non-zero is no increase to rate() or the capture alerts."""
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r")
    assert metrics.registry.get_sample_value("hotserve_capture_sink_errors_total", {"sink": "local"}) == 0
    dropped = {"model": "m", "dataset": "capture", "reason": "buffer_full"}
    assert metrics.registry.get_sample_value("hotserve_capture_dropped_records_total", dropped) is None
    x = np.ones((2, 3), np.float32)
    CaptureTap(writer, metrics).capture(
        ServedVersion(MANIFEST, EchoRuntime(), metrics), "v2", request({"x": x}), {"y": x}
    )
    assert metrics.registry.get_sample_value("hotserve_capture_dropped_records_total", dropped) == 0
    assert writer.close(10)


def test_an_unwritable_directory_counts_errors_holds_the_rows_and_writes_them_once_it_is_writable(
    tmp_path: Path, metrics: Metrics, writers: list[CaptureWriter]
) -> None:
    root = tmp_path / "capture"
    root.write_text("a file where the directory should be")  # mkdir fails: the sink cannot write
    writer = CaptureWriter(LocalSink(root), metrics, replica="r", rotate_bytes=1, retry_max_s=0.5)
    writers.append(writer)
    writer.start()
    writer.submit(item("a"))
    wait_for(lambda: sample(metrics, "hotserve_capture_sink_errors_total", sink="local") >= 2)  # retried
    assert sample(metrics, "hotserve_capture_sink_up", sink="local") == 0
    assert writer.held_records == 2
    root.unlink()
    root.mkdir()
    wait_for(lambda: writer.held_records == 0)
    writer.submit(item("b"))  # capture goes on
    wait_for(lambda: writer.held_records == 0 and len(files(root)) == 2)
    assert sorted(rows_in(root).column("request_id").to_pylist()) == ["a", "a", "b", "b"]
    assert sample(metrics, "hotserve_capture_sink_up", sink="local") == 1
    assert (
        sample(metrics, "hotserve_capture_dropped_records_total", model="m", dataset="capture", reason="shutdown") == 0
    )


def test_rows_the_sink_never_took_by_the_end_of_a_shutdown_are_counted_dropped(
    tmp_path: Path, metrics: Metrics
) -> None:
    root = tmp_path / "capture"
    root.write_text("not a directory")
    writer = CaptureWriter(LocalSink(root), metrics, replica="r")
    writer.start()
    writer.submit(item("a"))
    assert not writer.close(0.2)
    assert (
        sample(metrics, "hotserve_capture_dropped_records_total", model="m", dataset="capture", reason="shutdown") == 2
    )
    assert writer.held_records == 0


def test_a_request_waits_for_its_shadow_answer_within_the_wait_and_is_written_with_it(
    tmp_path: Path, metrics: Metrics
) -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        answer: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        waiting = item("a")
        waiting.shadow_sent(3)
        writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r", shadow_wait_s=3600)
        writer.submit(waiting)
        writer._cycle(final=False)
        assert writer._waiting == [waiting]
        answer.set_result({"y": np.full((2, 3), 7.0, np.float32)})
        waiting.shadow_done(answer)
        writer._cycle(final=False)
        assert writer._waiting == []
        assert writer.close(10)
    finally:
        loop.close()
    table = rows_in(tmp_path)
    assert table.column("shadow_version").to_pylist() == [3, 3]
    assert table.column("shadow.y").to_pylist() == [[7.0] * 3, [7.0] * 3]


def test_label_tables_are_appended_to_their_own_partition_with_the_same_bound(tmp_path: Path, metrics: Metrics) -> None:
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r", max_records=2)
    labels = pa.table({"request_id": ["a", "b"], "row": pa.array([0, 0], pa.int32()), "label": [1.0, 0.0]})
    assert writer.append_table("m/labels/hour=2026-01-01T00", labels, model="m", dataset="labels")
    assert not writer.append_table("m/labels/hour=2026-01-01T00", labels, model="m", dataset="labels")
    assert writer.close(10)
    (file,) = files(tmp_path)
    assert file.parent.relative_to(tmp_path).as_posix() == "m/labels/hour=2026-01-01T00"
    assert pa.parquet.read_table(file).equals(labels)  # type: ignore[attr-defined]
    assert sample(metrics, "hotserve_capture_written_records_total", model="m", dataset="labels") == 2
    assert (
        sample(metrics, "hotserve_capture_dropped_records_total", model="m", dataset="labels", reason="buffer_full")
        == 2
    )
    assert not writer.append_table("m/labels/hour=2026-01-01T00", labels, model="m", dataset="labels")  # closed


class RecordingIndex:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[ServedRows] = []
        self.fail = fail

    def put_rows(self, rows: ServedRows) -> None:
        if self.fail:
            raise ConnectionError("index down")
        self.batches.append(rows)


def test_the_served_index_gets_every_captured_record_and_its_failure_loses_no_parquet_row(
    tmp_path: Path, metrics: Metrics
) -> None:
    index = RecordingIndex()
    writer = CaptureWriter(LocalSink(tmp_path), metrics, replica="r", index=index)
    writer.submit(item("a", rows=3))
    assert writer.close(10)
    (rows,) = index.batches
    assert (rows.model, rows.version, rows.request_ids, rows.rows) == ("m", 2, ["a", "a", "a"], [0, 1, 2])
    assert rows.outputs == {"y": [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0], [12.0, 14.0, 16.0]]}

    failing = CaptureWriter(LocalSink(tmp_path / "other"), metrics, replica="r", index=RecordingIndex(fail=True))
    failing.submit(item("b"))
    assert failing.close(10)
    assert rows_in(tmp_path / "other").num_rows == 2
    assert sample(metrics, "hotserve_served_index_errors_total") == 2  # the rows it could not keep
