"""`MlflowAliases`: which registered version a released hotserve version stands for, what is said
to MLflow's REST API, and refusals that leave the verdict standing. The happy path against a real
MLflow server is in tests/mlflow/test_mlflow_interop.py; here the registry's answers are scripted
(httpx.MockTransport) so each refusal can be produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import fake_manifest

from load_tests.server_process import free_port
from server.contract.manifest import ImportedFrom, ModelManifest, RegistryModelRef
from server.errors import InvalidInput
from server.registry.control_api import Caller
from server.release.policy import RegistryTarget, ReleasePolicy
from server.release.record import ReleaseRecord
from server.release.registry_alias import SHA256_TAG, MlflowAliases

SHA = "ab" * 32


def record(registered_model: str | None = "fraud-reg") -> ReleaseRecord:
    policy = ReleasePolicy(registry=RegistryTarget(alias="champion", registered_model=registered_model))
    return ReleaseRecord(id="r1", model="fraud", version=2, baseline=1, policy=policy, created_by="ci", created_at=0.0)


def exported(version: int = 2) -> ModelManifest:
    return fake_manifest("fraud", version).model_copy(update={"onnx_sha256": SHA})


def imported_from_registry(tracking_uri: str = "http://mlflow") -> ModelManifest:
    source = ImportedFrom(
        file="model.onnx", sha256=SHA, size_bytes=10, ir_version=9, opsets={"": 17}, imported_at="2026-12-03T00:00:00Z",
        registry=RegistryModelRef(tracking_uri=tracking_uri, name="fraud-reg", version="7", alias="candidate"),
    )  # fmt: skip
    return exported().model_copy(update={"imported_from": source})


class Registry:
    """MLflow's REST API as scripted answers; the calls it received, in order."""

    def __init__(self, versions: list[dict[str, Any]], status: int = 200) -> None:
        self.versions = versions
        self.status = status
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/2.0/mlflow/")
        body = json.loads(request.content) if request.content else dict(request.url.params)
        self.calls.append((path, body))
        if self.status != 200:
            return httpx.Response(self.status, json={"error_code": "PERMISSION_DENIED", "message": "token lacks EDIT"})
        if path == "model-versions/search":
            return httpx.Response(200, json={"model_versions": self.versions})
        return httpx.Response(200, json={})

    def aliases(self, manifest: ModelManifest) -> MlflowAliases:
        return MlflowAliases("http://mlflow", lambda m, v: manifest, transport=httpx.MockTransport(self.handle))


def version(number: str, **tags: str) -> dict[str, Any]:
    return {"name": "fraud-reg", "version": number, "tags": [{"key": k, "value": v} for k, v in tags.items()]}


def by_export(number: str, hotserve_version: str) -> dict[str, Any]:
    tags = {SHA256_TAG: SHA, "hotserve.model": "fraud", "hotserve.version": hotserve_version}
    return version(number, **tags)


async def test_a_promotion_tags_the_version_then_moves_the_alias() -> None:
    registry = Registry([version("1", **{SHA256_TAG: "cd" * 32}), by_export("4", "2")])
    update = await registry.aliases(exported()).record_verdict(record(), "promoted", "version 2 promoted", None)
    assert (update.registered_version, update.tagged, update.alias_moved, update.error) == ("4", True, True, None)
    tags = {body["key"]: body["value"] for path, body in registry.calls if path == "model-versions/set-tag"}
    assert tags["hotserve.release.verdict"] == "promoted" and json.loads(tags["hotserve.release.evidence"])
    assert registry.calls[-1] == ("registered-models/alias", {"name": "fraud-reg", "alias": "champion", "version": "4"})


async def test_a_rollback_tags_the_version_and_leaves_the_alias() -> None:
    registry = Registry([by_export("4", "2")])
    update = await registry.aliases(exported()).record_verdict(record(), "rolled_back", "canary failed", None)
    assert update.tagged and not update.alias_moved
    assert all(path != "registered-models/alias" for path, _ in registry.calls)


async def test_a_version_imported_from_the_registry_needs_no_search() -> None:
    registry = Registry([])
    update = await registry.aliases(imported_from_registry()).record_verdict(record(None), "promoted", "ok", None)
    assert (update.registered_model, update.registered_version, update.alias_moved) == ("fraud-reg", "7", True)
    assert all(path != "model-versions/search" for path, _ in registry.calls)


@pytest.mark.parametrize(
    ("manifest", "registered_model", "versions", "reason"),
    [
        (exported(), None, [], "was not imported from the registry; name its registered model in the policy"),
        (exported(), "fraud-reg", [version("1")], "no version of registered model 'fraud-reg' holds version 2's graph"),
        (exported(), "fraud-reg", [by_export("4", "5"), by_export("5", "6")], "registered versions 4, 5 of"),
        (imported_from_registry(), "other", [], "was imported from registered model 'fraud-reg', not 'other'"),
        (
            imported_from_registry("http://elsewhere"),
            None,
            [],
            "imported from the registry at http://elsewhere, not this server's http://mlflow",
        ),
    ],
)
async def test_a_target_that_names_no_single_registered_version_is_refused(
    manifest: ModelManifest, registered_model: str | None, versions: list[dict[str, Any]], reason: str
) -> None:
    registry = Registry(versions)
    update = await registry.aliases(manifest).record_verdict(record(registered_model), "promoted", "ok", None)
    assert update.error is not None and reason in update.error, update.error
    assert not update.tagged and not update.alias_moved


async def test_a_refusing_or_unreachable_registry_is_reported_not_raised() -> None:
    registry = Registry([by_export("4", "2")], status=403)
    update = await registry.aliases(exported()).record_verdict(record(), "promoted", "ok", None)
    assert update.error is not None and "(403): token lacks EDIT" in update.error

    down = MlflowAliases(f"http://127.0.0.1:{free_port()}", lambda m, v: exported(), timeout_s=2.0)
    update = await down.record_verdict(record(), "promoted", "ok", None)
    await down.close()
    assert update.error is not None and "unreachable: ConnectError" in update.error


def test_mlflow_reserved_aliases_are_refused_in_the_policy() -> None:
    for alias in ("latest", "v3", "two words"):
        with pytest.raises(ValueError):
            RegistryTarget(alias=alias)


async def test_a_release_that_moves_an_alias_needs_a_tracking_uri(tmp_path: Path) -> None:
    from test_release_driver import Harness  # the one-replica driver harness

    h = Harness(tmp_path)
    with pytest.raises(InvalidInput, match="no MLflow tracking URI"):
        await h.driver.create(Caller("ci"), "fraud", 2, record().policy)
