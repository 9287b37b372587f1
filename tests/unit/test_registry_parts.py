"""Repository scan, control state file, loader checks and ServedVersion defaults, one at a time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from server.contract.manifest import BatchingPolicy, Lineage, ModelManifest, OpLibrary, TensorSpec, sha256_file
from server.errors import ControlConflict, DeadlineExceeded, ModelLoadFailed
from server.metrics.instruments import Metrics
from server.protocol.deadline import deadline_from
from server.registry.control_state import ControlSnapshot, FileControlState
from server.registry.loader import (
    check_graph,
    read_manifest,
    verify_model_file,
    verify_op_libraries,
    warm_up_inputs,
)
from server.registry.repository import scan_repository
from server.registry.served import ServedVersion
from tests.fakes import EchoRuntime, SlowRuntime, fake_manifest, request, write_model_version


def test_scan_keeps_positive_integer_version_folders_only(tmp_path: Path) -> None:
    for folder in ["a/1", "a/10", "a/2", "a/0", "a/007", "a/v3", "a/.tmp-4", "b/x", ".hotserve/1", "bad name/1"]:
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "a" / "5").write_text("a file, not a folder")
    assert scan_repository(tmp_path) == {"a": [1, 2, 10]}


async def test_control_state_round_trips_atomically(tmp_path: Path) -> None:
    state = FileControlState(tmp_path / "state" / "control.json")
    assert await state.read() == ControlSnapshot()
    snapshot = ControlSnapshot().with_alias("mlp", "production", 3).with_alias("mlp", "canary", 4)
    stored = await state.write(snapshot, expected_revision=0)
    assert stored == snapshot.model_copy(update={"revision": 1})
    assert await state.read() == stored
    assert snapshot.alias("mlp", "production") == 3
    assert snapshot.alias("other", "production") is None
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["control.json"]


async def test_control_state_write_is_compare_and_set_on_the_revision(tmp_path: Path) -> None:
    state = FileControlState(tmp_path / "control.json")
    first = await state.write(ControlSnapshot().with_alias("mlp", "production", 1), expected_revision=0)
    with pytest.raises(ControlConflict, match="expected revision 0, stored revision is 1"):
        await state.write(ControlSnapshot().with_alias("mlp", "production", 2), expected_revision=0)
    assert await state.read() == first
    second = await state.write(first.with_alias("mlp", "production", 2), expected_revision=1)
    assert (second.revision, second.alias("mlp", "production")) == (2, 2)


def test_production_history_keeps_the_previous_version_for_rollback() -> None:
    snapshot = ControlSnapshot().with_alias("m", "production", 1, by="alice")
    snapshot = snapshot.with_alias("m", "canary", 3).with_alias("m", "production", 2, by="bob")
    assert snapshot.previous_production("m") == 1
    assert [(c.version, c.previous, c.by) for c in snapshot.model("m").history] == [(1, None, "alice"), (2, 1, "bob")]
    assert snapshot.with_alias("m", "production", 2).model("m").history == snapshot.model("m").history
    assert ControlSnapshot().previous_production("m") is None


async def test_control_state_watch_yields_each_newer_snapshot(tmp_path: Path) -> None:
    state = FileControlState(tmp_path / "control.json", poll_interval_s=30)
    changes = state.watch(after_revision=0)
    next_change = asyncio.ensure_future(anext(changes))
    stored = await state.write(ControlSnapshot().with_alias("m", "production", 5), expected_revision=0)
    assert await asyncio.wait_for(next_change, 10) == stored
    await changes.aclose()


async def test_control_state_watch_sees_another_writer_by_polling(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    watcher = FileControlState(path, poll_interval_s=0.01)
    changes = watcher.watch(after_revision=0)
    next_change = asyncio.ensure_future(anext(changes))
    stored = await FileControlState(path).write(ControlSnapshot().with_alias("m", "production", 2), 0)
    assert await asyncio.wait_for(next_change, 10) == stored
    await changes.aclose()


async def test_invalid_control_state_is_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    path.write_text('{"models": {"mlp": {"aliases": {"production": 0}}}}')
    with pytest.raises(ValueError, match=r"control state .*control.json is invalid"):
        await FileControlState(path).read()


def test_missing_model_json_and_model_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match=r"model.json is missing"):
        read_manifest(tmp_path, "mlp", 1)
    write_model_version(tmp_path, "mlp", 1)
    folder = tmp_path / "mlp" / "1"
    manifest = read_manifest(folder, "mlp", 1)
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelLoadFailed, match=r"model.onnx is missing"):
        verify_model_file(folder, manifest)


def test_manifest_must_describe_its_own_folder(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    with pytest.raises(ModelLoadFailed, match="describes 'mlp' version 1, but sits in the folder of 'mlp' version 2"):
        read_manifest(tmp_path / "mlp" / "1", "mlp", 2)


def manifest_with(inputs: list[TensorSpec], max_batch_size: int = 8) -> ModelManifest:
    return ModelManifest(
        name="m",
        version=1,
        inputs=inputs,
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 3])],
        batching=BatchingPolicy(max_batch_size=max_batch_size),
        lineage=Lineage(architecture="t"),
        onnx_sha256="0" * 64,
    )


def test_graph_with_a_fixed_batch_axis_cannot_batch() -> None:
    runtime = EchoRuntime()
    runtime.inputs = [TensorSpec(name="x", datatype="FP32", shape=[1, 3])]
    manifest = manifest_with([TensorSpec(name="x", datatype="FP32", shape=[-1, 3])])
    with pytest.raises(ModelLoadFailed, match="fixes the batch axis at 1"):
        check_graph(manifest, runtime)
    check_graph(manifest_with(manifest.inputs, max_batch_size=1), runtime)


def test_graph_check_names_missing_inputs_and_wrong_datatypes() -> None:
    runtime = EchoRuntime()
    with pytest.raises(ModelLoadFailed, match=r"declared but absent \['z'\].*undeclared \['x'\]"):
        check_graph(manifest_with([TensorSpec(name="z", datatype="FP32", shape=[-1, 3])]), runtime)
    with pytest.raises(ModelLoadFailed, match="model.json says INT64, the graph has FP32"):
        check_graph(manifest_with([TensorSpec(name="x", datatype="INT64", shape=[-1, 3])]), runtime)


def test_warm_up_inputs_cover_every_input_at_the_asked_rows() -> None:
    manifest = manifest_with(
        [
            TensorSpec(name="x", datatype="FP16", shape=[-1, 3]),
            TensorSpec(name="ids", datatype="INT64", shape=[-1, -1]),
            TensorSpec(name="text", datatype="BYTES", shape=[-1]),
        ]
    )
    inputs = warm_up_inputs(manifest, 8)
    assert {k: (v.shape, v.dtype.str) for k, v in inputs.items()} == {
        "x": ((8, 3), "<f2"),
        "ids": ((8, 1), "<i8"),
        "text": ((8,), "|O"),
    }
    assert not inputs["x"].any()


async def test_served_version_applies_the_manifest_default_timeout() -> None:
    runtime = SlowRuntime()
    manifest = fake_manifest(batching=BatchingPolicy(default_timeout_ms=5, max_queue_delay_ms=0))
    served = ServedVersion(manifest, runtime, Metrics())
    assert served.default_timeout_s == 0.005
    first = asyncio.create_task(served.infer(request({"x": np.zeros((1, 3), np.float32)}, 1, None)))
    await asyncio.sleep(0)
    # The edge computes the deadline once, from arrival: with none requested, the manifest's.
    arrived = time.monotonic()
    deadline = deadline_from(arrived, None, None, served.default_timeout_s)
    assert deadline == arrived + 0.005
    with pytest.raises(DeadlineExceeded):  # queued behind a blocked worker past its 5 ms
        await asyncio.wait_for(served.infer(request({"x": np.ones((2, 3), np.float32)}, 2, deadline)), 20)
    runtime.gate.set()
    await asyncio.wait_for(first, 20)
    assert await served.close(timeout_s=5)
    assert runtime.closed
    assert runtime.batch_rows == [1]


def test_batch_axis_false_means_one_request_per_run() -> None:
    BatchingPolicy(enabled=False, batch_axis=False, max_batch_size=1)
    with pytest.raises(ValueError, match="batch_axis false needs enabled false, max_batch_size 1"):
        BatchingPolicy(batch_axis=False)


def test_graph_without_a_batch_axis_is_checked_whole_and_warmed_up_at_its_shape() -> None:
    runtime = EchoRuntime()
    runtime.inputs = [TensorSpec(name="x", datatype="FP32", shape=[3, 2])]
    runtime.outputs = [TensorSpec(name="y", datatype="FP32", shape=[3, -1])]
    whole = BatchingPolicy(enabled=False, batch_axis=False, max_batch_size=1)
    manifest = ModelManifest(
        name="m",
        version=1,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[3, 2])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[3, 3])],
        batching=whole,
        lineage=Lineage(architecture="t"),
        onnx_sha256="0" * 64,
    )
    check_graph(manifest, runtime)
    assert {k: v.shape for k, v in warm_up_inputs(manifest, 1).items()} == {"x": (3, 2)}
    wrong = manifest.model_copy(update={"inputs": [TensorSpec(name="x", datatype="FP32", shape=[4, 2])]})
    with pytest.raises(ModelLoadFailed, match="input 'x': axis 0 is 3 in the graph, model.json says 4"):
        check_graph(wrong, runtime)


def test_custom_op_library_must_match_its_sha256(tmp_path: Path) -> None:
    (tmp_path / "ops.so").write_bytes(b"not the library that was imported")
    manifest = fake_manifest().model_copy(
        update={"op_libraries": [OpLibrary(file="ops.so", sha256="a" * 64, domains=["ai.onnx.contrib"])]}
    )
    with pytest.raises(ModelLoadFailed, match=r"ops.so has sha256 [0-9a-f]{64}, model.json expects a{64}"):
        verify_op_libraries(tmp_path, manifest)
    (tmp_path / "ops.so").unlink()
    with pytest.raises(
        ModelLoadFailed,
        match=r"ops.so \(custom-op library for \['ai.onnx.contrib'\]\) "
        r"is missing",
    ):
        verify_op_libraries(tmp_path, manifest)


def test_a_custom_op_library_linked_from_outside_the_repository_is_refused(tmp_path: Path) -> None:
    folder, outside = tmp_path / "repository" / "mlp" / "1", tmp_path / "outside"
    folder.mkdir(parents=True)
    outside.mkdir()
    library = outside / "ops.so"
    library.write_bytes(b"a library nobody reviewed")
    (folder / "ops.so").symlink_to(library)
    manifest = fake_manifest().model_copy(
        update={"op_libraries": [OpLibrary(file="ops.so", sha256=sha256_file(library), domains=["ai.onnx.contrib"])]}
    )
    with pytest.raises(ModelLoadFailed, match=r"ops.so \(custom-op library\) is a symlink out of the model repository"):
        verify_op_libraries(folder, manifest)
    (folder / "ops.so").unlink()
    (folder / "ops.so").write_bytes(library.read_bytes())  # the same bytes inside the repository: accepted
    assert verify_op_libraries(folder, manifest) == [folder / "ops.so"]
