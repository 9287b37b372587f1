"""Health, readiness, server/model metadata, framework errors in the `{"error"}` form, lifespan."""

from __future__ import annotations

from server.api.error_handlers import STATUS_BY_ERROR, status_for
from server.errors import (
    DeadlineExceeded,
    FeatureStoreUnavailable,
    HotserveError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
)
from server.settings import Settings
from tests.fakes import FakeRegistry, FakeServedVersion, make_manifest, serving


def _version(name: str = "m", version: int = 1) -> FakeServedVersion:
    manifest = make_manifest(name, [("x", "FP32", [-1, 3])], [("y", "FP32", [-1])], version=version)
    return FakeServedVersion(manifest, lambda inputs: {"y": inputs["x"].sum(axis=1)}, provider="CPUExecutionProvider")


async def test_server_metadata_lists_the_binary_extension(settings: Settings) -> None:
    async with serving(settings, FakeRegistry([_version()])) as client:
        doc = (await client.get("/v2")).json()
        assert doc["name"] == "hotserve" and "binary_tensor_data" in doc["extensions"]
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}


async def test_model_metadata_has_v2_fields_provider_batching_and_lineage(settings: Settings) -> None:
    async with serving(settings, FakeRegistry([_version(version=1), _version(version=3)])) as client:
        doc = (await client.get("/v2/models/m")).json()
        assert doc["name"] == "m" and doc["versions"] == ["1", "3"] and doc["platform"] == "onnxruntime_onnx"
        assert doc["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
        assert doc["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1]}]
        extras = doc
        assert extras["version"] == "3" and extras["execution_provider"] == "CPUExecutionProvider"
        assert extras["batching"]["max_batch_size"] == 64
        assert extras["lineage"]["git_commit"] == "abc123"
        assert extras["lineage"]["dataset_sha256"] == "d" * 64 and extras["lineage"]["metrics"] == {"auc": 0.9}
        assert extras["lineage"]["imported_from"] is None  # trained, not imported
        assert extras["version_states"] == [
            {"version": "1", "state": "READY", "reason": None},
            {"version": "3", "state": "READY", "reason": None},
        ]
        pinned = (await client.get("/v2/models/m/versions/1")).json()
        assert pinned["version"] == "1"
        missing = await client.get("/v2/models/m/versions/2")
        assert missing.status_code == 404 and missing.json() == {"error": "model 'm' version 2 not found"}


async def test_model_readiness_is_200_ready_503_not_ready_404_unknown(settings: Settings) -> None:
    registry = FakeRegistry([_version()], not_ready=frozenset({"loading"}))
    async with serving(settings, registry) as client:
        ok = await client.get("/v2/models/m/ready")
        assert ok.status_code == 200 and ok.json() == {"name": "m", "version": "1", "ready": True}
        assert (await client.get("/v2/models/m/versions/1/ready")).status_code == 200
        loading = await client.get("/v2/models/loading/ready")
        assert loading.status_code == 503 and loading.json() == {"name": "loading", "ready": False}
        assert (await client.get("/v2/models/ghost/ready")).status_code == 404
        server_ready = await client.get("/v2/health/ready")
        assert server_ready.status_code == 503 and server_ready.json() == {"ready": False}


async def test_framework_errors_use_the_error_form(settings: Settings) -> None:
    async with serving(settings, FakeRegistry([_version()])) as client:
        missing = await client.get("/v3/whatever")
        assert missing.status_code == 404 and missing.json() == {"error": "no route for GET /v3/whatever"}
        wrong_method = await client.get("/v2/models/m/infer")
        assert wrong_method.status_code == 405
        assert wrong_method.json() == {"error": "method GET not allowed on /v2/models/m/infer"}


async def test_lifespan_starts_the_registry_and_closes_it_with_the_grace(settings: Settings) -> None:
    registry = FakeRegistry([_version()])
    async with serving(settings, registry):
        assert registry.started and registry.closed_with is None
    assert registry.closed_with == settings.shutdown_grace_s


def test_error_table_maps_each_family_member_and_falls_back_along_the_mro() -> None:
    assert status_for(InvalidInput("x", "a", "b")) == 400
    assert status_for(ModelNotFound("m")) == 404
    assert status_for(PayloadTooLarge(10, 5)) == 413
    assert status_for(Overloaded("m", 1, 2)) == 429
    assert status_for(FeatureStoreUnavailable("redis down")) == 503
    assert status_for(DeadlineExceeded(0.1)) == 504

    class NewKindOfInput(InvalidInput):
        pass

    assert status_for(NewKindOfInput("x", detail="d")) == 400
    assert status_for(ValueError("boom")) == 500
    assert STATUS_BY_ERROR[HotserveError] == 500


async def test_model_metadata_shows_the_training_table_by_file_name_only(settings: Settings) -> None:
    manifest = make_manifest("m", [("x", "FP32", [-1, 3])], [("y", "FP32", [-1])])
    lineage = manifest.lineage.model_copy(update={"dataset_path": "/home/alice/private/fraud-2026.parquet"})
    served = FakeServedVersion(manifest.model_copy(update={"lineage": lineage}), lambda inputs: {"y": inputs["x"]})
    async with serving(settings, FakeRegistry([served])) as client:
        doc = (await client.get("/v2/models/m")).json()
        assert doc["lineage"]["dataset_path"] == "fraud-2026.parquet"
