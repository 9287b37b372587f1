"""ModelRegistry on a real repository of tiny ONNX models: which version serves, failures, close."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from server.contract.manifest import sha256_file
from server.errors import ModelNotFound, ModelNotReady
from server.metrics.instruments import Metrics
from server.registry.control_store import open_control_state
from server.registry.registry import ModelRegistry, VersionState
from server.settings import Settings
from tests.fakes import request, tiny_mlp_reference, write_model_version


def settings_for(repository: Path, **overrides: object) -> Settings:
    return Settings(
        model_repository=repository,
        execution_providers="CPUExecutionProvider",
        intra_op_threads=1,
        inter_op_threads=1,
        **overrides,
    )  # type: ignore[arg-type]


def write_aliases(path: Path, aliases: dict[str, dict[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": {m: {"aliases": a} for m, a in aliases.items()}}))


async def started(repository: Path, **overrides: object) -> tuple[ModelRegistry, Metrics]:
    metrics = Metrics()
    settings = settings_for(repository, **overrides)
    registry = ModelRegistry(settings, metrics, open_control_state(settings, metrics))
    await registry.start()
    return registry, metrics


def loads(metrics: Metrics, model: str, result: str) -> float:
    return metrics.registry.get_sample_value("hotserve_model_loads_total", {"model": model, "result": result}) or 0.0


async def test_serves_the_latest_version_without_an_alias(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    weight, bias = write_model_version(tmp_path, "mlp", 2)
    registry, metrics = await started(tmp_path)
    try:
        served = registry.resolve("mlp")
        assert (served.version, served.provider) == (2, "CPUExecutionProvider")
        x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
        out = await served.infer(request({"x": x}, 2, None))
        np.testing.assert_allclose(out["y"], tiny_mlp_reference(x, weight, bias), rtol=1e-5)
        assert registry.ready
        assert [(s.name, s.version, s.state) for s in registry.statuses()] == [
            ("mlp", 1, VersionState.AVAILABLE),
            ("mlp", 2, VersionState.READY),
        ]
        assert loads(metrics, "mlp", "success") == 1
        assert metrics.registry.get_sample_value("hotserve_model_ready", {"model": "mlp", "version": "2"}) == 1
    finally:
        await registry.close(timeout_s=5)


async def test_failure_counters_of_every_model_found_start_at_zero(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    registry, metrics = await started(tmp_path)
    try:
        write_model_version(tmp_path, "late", 1)
        await registry.rescan()
        for model in ("mlp", "late"):
            for name in ("hotserve_model_loads_total", "hotserve_model_swaps_total"):
                # 0, not absent: Prometheus then sees the first failure as an increase (alerts).
                assert metrics.registry.get_sample_value(name, {"model": model, "result": "failure"}) == 0
    finally:
        await registry.close(timeout_s=5)


async def test_production_alias_in_the_control_file_picks_the_version(tmp_path: Path) -> None:
    weight, bias = write_model_version(tmp_path, "mlp", 1)
    write_model_version(tmp_path, "mlp", 2)
    write_aliases(tmp_path / ".hotserve" / "control.json", {"mlp": {"production": 1}})
    registry, _ = await started(tmp_path)
    try:
        served = registry.resolve("mlp")
        assert served.version == 1
        assert registry.resolve("mlp", 1) is served
        with pytest.raises(ModelNotReady, match=r"version 2 is AVAILABLE \(not loaded\)"):
            registry.resolve("mlp", 2)
    finally:
        await registry.close(timeout_s=5)


async def test_control_state_path_setting_is_honoured(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    write_model_version(repository, "mlp", 1)
    write_model_version(repository, "mlp", 2)
    control = tmp_path / "elsewhere" / "state.json"
    write_aliases(control, {"mlp": {"production": 1}})
    registry, _ = await started(repository, control_state_path=control)
    try:
        assert registry.resolve("mlp").version == 1
    finally:
        await registry.close(timeout_s=5)


async def test_sha256_mismatch_fails_that_version_while_a_good_model_serves(tmp_path: Path) -> None:
    write_model_version(tmp_path, "good", 1)
    write_model_version(tmp_path, "tampered", 1)
    with (tmp_path / "tampered" / "1" / "model.onnx").open("ab") as fh:
        fh.write(b"\x00")
    registry, metrics = await started(tmp_path)
    try:
        assert registry.resolve("good").version == 1
        (status,) = [s for s in registry.statuses() if s.name == "tampered"]
        assert status.state is VersionState.FAILED
        assert status.reason is not None and "sha256" in status.reason and "corrupt" in status.reason
        with pytest.raises(ModelNotReady, match="no ready version"):
            registry.resolve("tampered")
        with pytest.raises(ModelNotReady, match="FAILED: .*sha256"):
            registry.resolve("tampered", 1)
        assert not registry.ready
        assert loads(metrics, "tampered", "failure") == 1
    finally:
        await registry.close(timeout_s=5)


async def test_garbage_model_file_with_matching_digest_fails_with_the_onnxruntime_reason(tmp_path: Path) -> None:
    write_model_version(tmp_path, "good", 1)
    write_model_version(tmp_path, "garbage", 1)
    folder = tmp_path / "garbage" / "1"
    (folder / "model.onnx").write_bytes(b"\xde\xad\xbe\xef not an onnx graph" * 8)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["onnx_sha256"] = sha256_file(folder / "model.onnx")
    (folder / "model.json").write_text(json.dumps(manifest))
    registry, _ = await started(tmp_path)
    try:
        (status,) = [s for s in registry.statuses() if s.name == "garbage"]
        assert status.state is VersionState.FAILED
        assert status.reason is not None and "onnxruntime could not load model.onnx" in status.reason
        assert registry.resolve("good").version == 1
    finally:
        await registry.close(timeout_s=5)


async def test_invalid_model_json_fails_naming_the_field(tmp_path: Path) -> None:
    write_model_version(tmp_path, "bad", 1)
    path = tmp_path / "bad" / "1" / "model.json"
    manifest = json.loads(path.read_text())
    manifest["batching"]["max_batch_size"] = 0
    path.write_text(json.dumps(manifest))
    registry, _ = await started(tmp_path)
    try:
        (status,) = registry.statuses()
        assert status.state is VersionState.FAILED
        assert status.reason is not None
        assert "model.json is invalid" in status.reason and "batching.max_batch_size" in status.reason
    finally:
        await registry.close(timeout_s=5)


async def test_manifest_disagreeing_with_the_graph_fails(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    path = tmp_path / "mlp" / "1" / "model.json"
    manifest = json.loads(path.read_text())
    manifest["inputs"][0]["shape"] = [-1, 4]
    path.write_text(json.dumps(manifest))
    registry, _ = await started(tmp_path)
    try:
        (status,) = registry.statuses()
        assert status.reason == "input 'x': axis 1 is 3 in the graph, model.json says 4"
    finally:
        await registry.close(timeout_s=5)


async def test_failing_newest_version_falls_back_to_an_older_one_without_an_alias(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    write_model_version(tmp_path, "mlp", 2)
    (tmp_path / "mlp" / "2" / "model.onnx").write_bytes(b"truncated")
    registry, _ = await started(tmp_path)
    try:
        assert registry.resolve("mlp").version == 1
        assert [s.state for s in registry.statuses()] == [VersionState.READY, VersionState.FAILED]
        assert registry.ready
    finally:
        await registry.close(timeout_s=5)


async def test_failing_pinned_version_is_not_replaced_by_another(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    write_model_version(tmp_path, "mlp", 2)
    (tmp_path / "mlp" / "1" / "model.onnx").write_bytes(b"truncated")
    write_aliases(tmp_path / ".hotserve" / "control.json", {"mlp": {"production": 1}})
    registry, _ = await started(tmp_path)
    try:
        with pytest.raises(ModelNotReady):
            registry.resolve("mlp")
        assert [s.state for s in registry.statuses()] == [VersionState.FAILED, VersionState.AVAILABLE]
    finally:
        await registry.close(timeout_s=5)


async def test_unknown_model_and_version_are_not_found(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    registry, _ = await started(tmp_path)
    try:
        with pytest.raises(ModelNotFound) as unknown_model:
            registry.resolve("nope")
        assert unknown_model.value.version is None
        with pytest.raises(ModelNotFound) as unknown_version:
            registry.resolve("mlp", 9)
        assert unknown_version.value.version == 9
    finally:
        await registry.close(timeout_s=5)


async def test_close_stops_serving_and_reports_not_ready(tmp_path: Path) -> None:
    write_model_version(tmp_path, "mlp", 1)
    registry, metrics = await started(tmp_path)
    served = registry.resolve("mlp")
    await registry.close(timeout_s=5)
    assert not registry.ready
    with pytest.raises(ModelNotReady, match="shutting down"):
        registry.resolve("mlp")
    with pytest.raises(ModelNotReady):
        await served.infer(request({"x": np.zeros((1, 3), dtype=np.float32)}, 1, None))
    assert metrics.registry.get_sample_value("hotserve_model_ready", {"model": "mlp", "version": "1"}) == 0


async def test_missing_repository_stops_start(tmp_path: Path) -> None:
    settings, metrics = settings_for(tmp_path / "absent"), Metrics()
    registry = ModelRegistry(settings, metrics, open_control_state(settings, metrics))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        await registry.start()
