"""The capture writer on a real S3-compatible server (moto_server): files written whole under the
hive layout and read back through the sink's own filesystem; the store going down and coming back
refusing (no bucket) counts errors and holds the rows, which are written once it takes them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from s3_process import ACCESS, S3Server
from server.capture.captured import Captured
from server.capture.sink import S3Sink, filesystem_for, open_sink
from server.capture.writer import CaptureWriter
from server.contract.manifest import FeatureSpec, Lineage, ModelManifest, TensorSpec
from server.metrics.instruments import Metrics

pytestmark = pytest.mark.integration

SPEC = FeatureSpec(input="x", columns=["a", "b"], request_features=["a", "b"])
MANIFEST = ModelManifest(
    name="fraud",
    version=1,
    inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2])],
    outputs=[TensorSpec(name="p", datatype="FP32", shape=[-1, 1])],
    features=SPEC,
    lineage=Lineage(architecture="test", git_commit="abc123", dataset_sha256="d" * 64),
    onnx_sha256="0" * 64,
)
HANG_GUARD_S = 120.0


def item(request_id: str) -> Captured:
    x = np.array([[1.0, 2.0]], np.float32)
    return Captured(request_id, time.time(), MANIFEST, "v1", {"x": x}, {"p": np.array([[0.5]], np.float32)}, 1, 64)


def wait_for(condition: Callable[[], bool]) -> None:
    give_up = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < give_up, "condition never held"
        time.sleep(0.02)


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in ACCESS.items():
        monkeypatch.setenv(name, value)
    server = S3Server(tmp_path / "moto.log")
    server.start()
    yield server
    server.stop()


def errors(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("hotserve_capture_sink_errors_total", {"sink": "s3"}) or 0.0


def test_files_land_whole_in_the_bucket_under_the_hive_layout_and_read_back(s3: S3Server) -> None:
    s3.create_bucket("captures")
    url = "s3://captures/prod/capture"
    sink = open_sink(url, s3.endpoint)
    assert isinstance(sink, S3Sink) and sink.describe() == f"s3://captures/prod/capture at {s3.endpoint}"
    metrics = Metrics()
    writer = CaptureWriter(sink, metrics, replica="pod-a")
    writer.start()
    for n in range(20):
        writer.submit(item(f"r{n}"))
    assert writer.close(30)
    (key,) = s3.keys("captures")
    assert key.startswith("prod/capture/fraud/version=1/hour=") and key.endswith(".parquet")
    filesystem, root = filesystem_for(url, s3.endpoint)
    table = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"r{n}" for n in range(20))
    assert table.column("in.b").to_pylist() == [2.0] * 20


def test_the_store_going_down_and_refusing_holds_the_rows_and_capture_resumes_when_it_takes_them(
    s3: S3Server,
) -> None:
    s3.create_bucket("captures")
    metrics = Metrics()
    writer = CaptureWriter(
        open_sink("s3://captures/c", s3.endpoint), metrics, replica="pod-a", rotate_bytes=1, retry_max_s=0.5
    )
    writer.start()
    try:
        writer.submit(item("before"))
        wait_for(lambda: len(s3.keys("captures")) == 1)
        s3.stop()  # down: connections refused
        writer.submit(item("down"))
        wait_for(lambda: errors(metrics) >= 1)
        assert metrics.registry.get_sample_value("hotserve_capture_sink_up", {"sink": "s3"}) == 0
        assert writer.held_records == 1
        s3.start()  # back, but without the bucket: it refuses
        seen = errors(metrics)
        wait_for(lambda: errors(metrics) > seen)
        assert writer.held_records == 1
        s3.create_bucket("captures")
        wait_for(lambda: writer.held_records == 0)
        writer.submit(item("after"))
        wait_for(lambda: writer.held_records == 0 and len(s3.keys("captures")) == 2)
    finally:
        assert writer.close(30)
    filesystem, root = filesystem_for("s3://captures/c", s3.endpoint)
    table = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("request_id").to_pylist()) == ["after", "down"]  # the store lost "before"
    assert metrics.registry.get_sample_value("hotserve_capture_sink_up", {"sink": "s3"}) == 1
    dropped = metrics.registry.get_sample_value(
        "hotserve_capture_dropped_records_total", {"model": "fraud", "dataset": "capture", "reason": "shutdown"}
    )
    assert not dropped
