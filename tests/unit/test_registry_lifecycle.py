"""Version lifecycle in the registry: DRAINING while leased, UNLOADED with the session released,
one load per version however many ask, stale snapshots refused, and the desired-state helpers."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from server.errors import ControlConflict, ControlStateUnavailable, ModelNotFound, VersionNotReady
from server.metrics.instruments import Metrics
from server.registry.control_state import ControlSnapshot, FileControlState
from server.registry.control_store import open_control_state
from server.registry.registry import ModelRegistry, VersionState
from server.runtime.onnx import OnnxRuntime
from server.settings import Settings
from tests.fakes import break_version, request, until, write_model_version


def settings_for(repository: Path) -> Settings:
    return Settings(
        model_repository=repository, execution_providers="CPUExecutionProvider", intra_op_threads=1, inter_op_threads=1
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def registry(tmp_path: Path, metrics: Metrics) -> AsyncIterator[ModelRegistry]:
    for version in (1, 2):
        write_model_version(tmp_path, "mlp", version)
    settings = settings_for(tmp_path)
    registry = ModelRegistry(settings, metrics, open_control_state(settings, metrics))
    await registry.start()
    yield registry
    await registry.close(timeout_s=5)


def state(registry: ModelRegistry, version: int) -> VersionState:
    return registry.status("mlp", version).state


async def test_a_version_drains_while_a_request_holds_its_lease_then_unloads(registry: ModelRegistry) -> None:
    await registry.apply(registry.applied.with_loaded("mlp", 1))
    served = registry.route("mlp", 1).primary  # a request routed to v1, leased, not answered yet
    assert served is not None
    served.lease()
    assert registry.status("mlp", 1).inflight == 1
    unload = asyncio.ensure_future(registry.apply(registry.applied.without_loaded("mlp", 1)))
    await until(lambda: state(registry, 1) is VersionState.DRAINING)
    assert not unload.done()
    assert registry.status("mlp", 1).inflight == 1
    out = await served.infer(request({"x": np.ones((1, 3), np.float32)}))  # still answered by v1
    assert out["y"].shape == (1, 2)
    served.release()
    await asyncio.wait_for(unload, 10)
    assert state(registry, 1) is VersionState.UNLOADED
    assert registry.status("mlp", 1).inflight == 0


async def test_unloading_releases_the_version_with_its_session(registry: ModelRegistry) -> None:
    await registry.apply(registry.applied.with_loaded("mlp", 1))
    served = registry.resolve("mlp", 1)
    assert isinstance(served.runtime, OnnxRuntime)
    released = weakref.ref(served)  # the session, its pool and its batcher go with it
    del served
    await registry.apply(registry.applied.without_loaded("mlp", 1))
    gc.collect()
    assert released() is None


async def test_concurrent_preparations_of_one_version_load_it_once(registry: ModelRegistry, metrics: Metrics) -> None:
    async def prepared() -> VersionState:
        async with registry.prepare("mlp", [1]):
            return state(registry, 1)

    states = await asyncio.gather(*(prepared() for _ in range(5)))
    assert set(states) == {VersionState.READY}
    assert (
        metrics.registry.get_sample_value("hotserve_model_loads_total", {"model": "mlp", "result": "success"}) == 2
    )  # v2 at start, v1 once
    # Nothing wants v1: the last preparation to end unloads what was loaded for nothing.
    assert state(registry, 1) is VersionState.UNLOADED


async def test_prepare_names_the_failure_and_unknown_versions(tmp_path: Path, registry: ModelRegistry) -> None:
    write_model_version(tmp_path, "mlp", 3)
    reason = break_version(tmp_path / "mlp" / "3", "graph")
    await registry.rescan()
    with pytest.raises(VersionNotReady, match=f"version 3 is FAILED: .*{reason}"):
        async with registry.prepare("mlp", [1, 3]):
            raise AssertionError("a preparation whose load failed never runs its block")
    assert state(registry, 1) is VersionState.UNLOADED  # loaded for it, unloaded when it failed
    with pytest.raises(ModelNotFound, match="model 'mlp' version 9 not found"):
        async with registry.prepare("mlp", [9]):
            raise AssertionError("unreachable")
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        registry.versions("nope")


async def test_a_snapshot_older_than_the_applied_one_is_never_applied(registry: ModelRegistry) -> None:
    old = registry.applied.model_copy(update={"revision": 3})
    newer = old.with_alias("mlp", "production", 1).model_copy(update={"revision": 4})
    await registry.apply(newer)
    await registry.apply(old)  # e.g. a slow apply of an earlier write finishing last
    assert registry.serving("mlp") == 1 and registry.applied.revision == 4


async def test_commit_stores_then_applies_and_retries_a_stale_read(registry: ModelRegistry) -> None:
    calls = 0

    def edit(snapshot: ControlSnapshot) -> ControlSnapshot:
        nonlocal calls
        calls += 1
        return snapshot.with_alias("mlp", "production", 1)

    change = await registry.commit(edit)
    await change.drained
    assert change.after is not None and change.after.revision == 1 and calls == 1
    assert registry.serving("mlp") == 1 and state(registry, 2) is VersionState.UNLOADED
    assert (await registry.control.read()) == change.after
    noop = await registry.commit(lambda s: None)
    assert noop.after is None and noop.before == change.after


async def test_commit_gives_up_after_repeated_conflicts(registry: ModelRegistry) -> None:
    async def always_stale(snapshot: ControlSnapshot, expected_revision: int) -> ControlSnapshot:
        raise ControlConflict(expected_revision, expected_revision + 1)

    registry.control.write = always_stale  # type: ignore[method-assign]
    with pytest.raises(ControlConflict):
        await registry.commit(lambda s: s.with_alias("mlp", "production", 1))
    assert registry.serving("mlp") == 2


async def test_a_stopped_model_serves_nothing_and_does_not_hold_readiness_back(registry: ModelRegistry) -> None:
    await registry.apply(registry.applied.with_stopped("mlp", True))
    assert registry.serving("mlp") is None and registry.ready
    assert [s.state for s in registry.versions("mlp")] == [VersionState.AVAILABLE, VersionState.UNLOADED]
    await registry.apply(registry.applied.with_stopped("mlp", False))
    assert registry.serving("mlp") == 2


def test_desired_state_helpers_keep_loaded_retained_and_stopped() -> None:
    snapshot = ControlSnapshot().with_alias("m", "production", 3).with_loaded("m", 2).with_loaded("m", 1)
    snapshot = snapshot.with_retained("m", 4).with_loaded("m", 2)
    assert snapshot.model("m").loaded == [1, 2]
    assert snapshot.model("m").wanted() == {1, 2, 3, 4}
    assert snapshot.without_loaded("m", 4).model("m").wanted() == {1, 2, 3}
    assert snapshot.without_loaded("m", 1).model("m").loaded == [2]
    assert snapshot.with_stopped("m", True).model("m").wanted() == set()
    assert snapshot.with_alias("m", "canary", 5).without_alias("m", "canary").model("m").aliases == {"production": 3}
    # With production unset, the version serving is what a first promotion moves away from.
    first = ControlSnapshot().with_alias("m", "production", 2, by="alice", serving=1)
    assert first.previous_production("m") == 1


async def test_a_control_state_that_cannot_be_written_says_where_and_why(tmp_path: Path) -> None:
    (tmp_path / "mounted").write_text("a file where the folder should be")
    state = FileControlState(tmp_path / "mounted" / "control.json")
    with pytest.raises(
        ControlStateUnavailable,
        match=r"mounted/control.json cannot be written \(.*\); "
        r"set HOTSERVE_CONTROL_STATE_PATH",
    ):
        await state.write(ControlSnapshot().with_alias("m", "production", 1), expected_revision=0)


async def test_a_change_is_applied_even_after_the_store_was_reset_to_an_older_revision(registry: ModelRegistry) -> None:
    await registry.apply(registry.applied.model_copy(update={"revision": 7}))  # then the file is lost
    change = await registry.commit(lambda s: s.with_alias("mlp", "production", 1))
    assert change.after is not None and change.after.revision == 1
    assert registry.serving("mlp") == 1 and registry.applied.revision == 1


async def test_a_model_file_linked_from_outside_the_repository_is_refused(tmp_path: Path) -> None:
    repository, outside = tmp_path / "repository", tmp_path / "outside"
    write_model_version(repository, "mlp", 1)
    write_model_version(outside, "mlp", 1)
    (repository / "mlp" / "1" / "model.onnx").unlink()
    (repository / "mlp" / "1" / "model.onnx").symlink_to(outside / "mlp" / "1" / "model.onnx")
    settings, metrics = settings_for(repository), Metrics()
    registry = ModelRegistry(settings, metrics, open_control_state(settings, metrics))
    await registry.start()
    try:
        status = registry.status("mlp", 1)
        assert status.state is VersionState.FAILED
        assert status.reason is not None
        assert status.reason.endswith("model.onnx is a symlink out of the model repository")
    finally:
        await registry.close(timeout_s=5)


async def test_a_load_failure_reason_shows_paths_relative_to_the_repository(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_model_version(repository, "mlp", 1)
    (repository / "mlp" / "1" / "model.onnx").unlink()
    settings, metrics = settings_for(repository), Metrics()
    registry = ModelRegistry(settings, metrics, open_control_state(settings, metrics))
    await registry.start()
    try:
        reason = registry.status("mlp", 1).reason
        assert reason == "mlp/1/model.onnx is missing"
        assert str(tmp_path) not in reason
    finally:
        await registry.close(timeout_s=5)
