"""The admin API in process (real registry, real onnxruntime on tiny models): auth, changes,
refusals with their status and reason, the audit log, the repository extension."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.metrics.instruments import Metrics
from server.settings import Settings
from tests.fakes import UNTIL_HANG_GUARD_S, break_version, write_model_version

ALICE = "alice-token-0123456789"
CI = "ci-token-9876543210abc"


def settings_for(repository: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_repository": repository,
        "execution_providers": "CPUExecutionProvider",
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        "admin_tokens": f"alice:{ALICE},ci:{CI}",
        **overrides,
    }
    return Settings(**values)


class Admin:
    """An httpx client on the app, with helpers that send alice's token unless told otherwise."""

    def __init__(self, client: httpx.AsyncClient, metrics: Metrics) -> None:
        self.client = client
        self.metrics = metrics

    async def call(
        self, method: str, path: str, token: str | None = ALICE, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.request(method, path, headers={**auth, **(headers or {})}, **kwargs)

    async def model(self, name: str = "mlp") -> dict[str, Any]:
        response = await self.call("GET", f"/admin/models/{name}")
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        return doc

    async def state(self, version: int, name: str = "mlp") -> dict[str, Any]:
        (view,) = [v for v in (await self.model(name))["versions"] if v["version"] == version]
        return view

    async def infer(self, name: str = "mlp", version: int | None = None) -> httpx.Response:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
        return await self.client.post(
            path, json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.5, -1.0, 2.0]}]}
        )

    def sample(self, name: str, labels: dict[str, str]) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def serving_admin(settings: Settings) -> AsyncIterator[Admin]:
    metrics = Metrics()
    app = create_app(settings, metrics=metrics)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://hotserve") as client:
            yield Admin(client, metrics)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    for version in (1, 2, 3):
        write_model_version(root, "mlp", version)
    write_model_version(root, "other", 1)
    return root


@pytest.fixture
async def admin(repository: Path) -> AsyncIterator[Admin]:
    async for client in serving_admin(settings_for(repository)):
        yield client


# --- auth -----------------------------------------------------------------------------------------


async def test_admin_api_is_off_without_a_token_and_says_so_at_start(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async for admin in serving_admin(settings_for(repository, admin_tokens=None)):
        for method, path in [
            ("GET", "/admin/models"),
            ("POST", "/admin/models/mlp/rollback"),
            ("POST", "/v2/repository/index"),
        ]:
            response = await admin.call(method, path)
            assert response.status_code == 404, (path, response.text)
        assert (await admin.infer()).status_code == 200
    assert "admin API off (404)" in caplog.text


async def test_missing_token_is_401_wrong_token_403_right_token_200_and_none_is_logged(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    missing = await admin.call("GET", "/admin/models", token=None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "missing `Authorization: Bearer <token>`" in missing.json()["error"]
    basic = await admin.client.get("/admin/models", headers={"Authorization": f"Basic {ALICE}"})
    assert basic.status_code == 401
    wrong = await admin.call("GET", "/admin/models", token="not-" + ALICE)
    assert (wrong.status_code, wrong.json()) == (403, {"error": "admin API: this token is not accepted"})
    assert (await admin.call("POST", "/v2/repository/index", token="not-" + ALICE)).status_code == 403
    assert (await admin.call("GET", "/admin/models")).status_code == 200
    assert (await admin.call("GET", "/admin/models", token=CI)).status_code == 200
    assert ALICE not in caplog.text and CI not in caplog.text


async def test_the_single_unnamed_token_is_audited_as_admin(repository: Path) -> None:
    token = "only-one-token-for-ops"
    async for admin in serving_admin(settings_for(repository, admin_tokens=None, admin_token=token)):
        assert (await admin.call("POST", "/admin/models/mlp/versions/1/load", token=token)).status_code == 200
        entries = (await admin.call("GET", "/admin/audit", token=token)).json()["entries"]
        assert [(e["who"], e["action"], e["to"], e["result"]) for e in entries] == [("admin", "load", 1, "ok")]


# --- changes ---------------------------------------------------------------------------------------


async def test_list_shows_each_version_state_aliases_load_time_provider_and_memory(admin: Admin) -> None:
    doc = (await admin.call("GET", "/admin/models")).json()
    assert [m["name"] for m in doc["models"]] == ["mlp", "other"]
    mlp = doc["models"][0]
    assert (mlp["serving"], mlp["aliases"], mlp["stopped"]) == (3, {}, False)
    assert [(v["version"], v["state"]) for v in mlp["versions"]] == [(1, "AVAILABLE"), (2, "AVAILABLE"), (3, "READY")]
    ready = mlp["versions"][2]
    assert ready["provider"] == "CPUExecutionProvider" and ready["inflight"] == 0
    assert ready["load_duration_s"] > 0 and ready["loaded_at"].endswith("+00:00")
    assert ready["memory_bytes"] is not None and ready["memory_bytes"] >= 0
    assert mlp["versions"][0]["loaded_at"] is None


async def test_promote_loads_the_version_then_switches_and_rollback_is_instant(admin: Admin) -> None:
    promoted = await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["change"] == {
        "action": "alias",
        "model": "mlp",
        "alias": "production",
        "from": 3,
        "to": 1,
        "changed": True,
        "revision": 1,
    }
    model = promoted.json()["model"]
    assert (model["serving"], model["aliases"], model["retained"]) == (1, {"production": 1}, 3)
    assert (await admin.infer()).json()["model_version"] == "1"
    # The previous production (3) stayed loaded: the rollback is a routing change, no load.
    loads = admin.sample("hotserve_model_loads_total", {"model": "mlp", "result": "success"})
    rolled = await admin.call("POST", "/admin/models/mlp/rollback", token=CI)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["change"]["from"] == 1 and rolled.json()["change"]["to"] == 3
    assert admin.sample("hotserve_model_loads_total", {"model": "mlp", "result": "success"}) == loads
    assert (await admin.infer()).json()["model_version"] == "3"
    assert admin.sample("hotserve_model_swaps_total", {"model": "mlp", "result": "success"}) == 2
    assert admin.sample("hotserve_model_version_info", {"model": "mlp", "alias": "production", "version": "3"}) == 1
    assert admin.sample("hotserve_model_version_info", {"model": "mlp", "alias": "production", "version": "1"}) == 0
    history = (await admin.call("GET", "/admin/audit", params={"model": "mlp", "alias": "production"})).json()
    assert [(e["who"], e["action"], e["from"], e["to"]) for e in history["entries"]] == [
        ("alice", "alias", 3, 1),
        ("ci", "rollback", 1, 3),
    ]


async def test_setting_an_alias_to_the_version_it_names_is_a_noop_200(admin: Admin) -> None:
    first = await admin.call("PUT", "/admin/models/mlp/aliases/canary", json={"version": 2})
    assert first.status_code == 200 and first.json()["change"]["changed"] is True
    again = await admin.call("PUT", "/admin/models/mlp/aliases/canary", json={"version": 2})
    assert again.status_code == 200
    assert again.json()["change"]["changed"] is False
    assert again.json()["change"]["revision"] == first.json()["change"]["revision"]
    assert (await admin.state(2))["aliases"] == ["canary"]
    # A canary takes no unpinned traffic by itself; pinned requests reach it.
    assert (await admin.infer()).json()["model_version"] == "3"
    assert (await admin.infer(version=2)).json()["model_version"] == "2"
    entries = (await admin.call("GET", "/admin/audit")).json()["entries"]
    assert [e["result"] for e in entries] == ["ok", "noop"]


async def test_load_keeps_a_version_loaded_and_unload_drains_it_away(admin: Admin) -> None:
    loaded = await admin.call("POST", "/admin/models/mlp/versions/1/load")
    assert loaded.status_code == 200 and loaded.json()["model"]["loaded"] == [1]
    assert (await admin.infer(version=1)).json()["model_version"] == "1"
    unloaded = await admin.call("POST", "/admin/models/mlp/versions/1/unload")
    assert unloaded.status_code == 200, unloaded.text
    assert (await admin.state(1))["state"] == "UNLOADED"
    assert (await admin.infer(version=1)).status_code == 503
    assert admin.sample("hotserve_model_unloads_total", {"model": "mlp", "result": "drained"}) == 1
    again = await admin.call("POST", "/admin/models/mlp/versions/1/unload")
    assert again.status_code == 200 and again.json()["change"]["changed"] is False


async def test_unloading_a_version_an_alias_names_or_that_serves_is_409(admin: Admin) -> None:
    serving = await admin.call("POST", "/admin/models/mlp/versions/3/unload")
    assert serving.status_code == 409
    assert "serves its unpinned requests; promote another version" in serving.json()["error"]
    await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 2})
    await admin.call("PUT", "/admin/models/mlp/aliases/champion", json={"version": 3})
    production = await admin.call("POST", "/admin/models/mlp/versions/2/unload")
    assert (production.status_code, production.json()) == (
        409,
        {"error": "model 'mlp' version 2 holds production; promote another version before unloading it"},
    )
    aliased = await admin.call("POST", "/admin/models/mlp/versions/3/unload")
    assert aliased.status_code == 409 and "alias 'champion'" in aliased.json()["error"]
    assert (await admin.call("DELETE", "/admin/models/mlp/aliases/production")).status_code == 409
    assert (await admin.call("DELETE", "/admin/models/mlp/aliases/champion")).status_code == 200
    # 3 is still retained as the previous production; unloading it now lets it go.
    assert (await admin.call("POST", "/admin/models/mlp/versions/3/unload")).status_code == 200
    assert (await admin.state(3))["state"] == "UNLOADED"
    assert (await admin.model())["retained"] is None
    refused = (await admin.call("GET", "/admin/audit")).json()["entries"]
    assert [e["result"] for e in refused if e["action"] == "unload"] == ["refused", "refused", "refused", "ok"]


@pytest.mark.parametrize("how", ["sha256", "graph", "warm_up"])
async def test_a_version_that_fails_to_load_is_409_with_the_reason_and_never_takes_traffic(
    repository: Path, how: str
) -> None:
    write_model_version(repository, "mlp", 4)
    expected = break_version(repository / "mlp" / "4", how)
    write_model_version(repository, "mlp", 5)
    async for admin in serving_admin(settings_for(repository, admin_tokens=f"alice:{ALICE}")):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 5})
        for method, path, body in [
            ("POST", "/admin/models/mlp/versions/4/load", None),
            ("PUT", "/admin/models/mlp/aliases/production", {"version": 4}),
        ]:
            response = await admin.call(method, path, json=body)
            assert response.status_code == 409, response.text
            assert response.json()["error"].startswith("model 'mlp' version 4 is FAILED: ")
            assert expected in response.json()["error"]
        view = await admin.model()
        assert view["serving"] == 5 and view["aliases"] == {"production": 5}
        (state,) = [v for v in view["versions"] if v["version"] == 4]
        assert state["state"] == "FAILED" and expected in state["reason"]
        assert (await admin.infer()).json()["model_version"] == "5"
        assert admin.sample("hotserve_model_loads_total", {"model": "mlp", "result": "failure"}) >= 2
        assert admin.sample("hotserve_model_swaps_total", {"model": "mlp", "result": "failure"}) == 1
        entries = (await admin.call("GET", "/admin/audit")).json()["entries"]
        assert [(e["action"], e["result"]) for e in entries[-2:]] == [("load", "failed"), ("alias", "failed")]


async def test_unknown_names_are_404_and_malformed_bodies_400(admin: Admin) -> None:
    for method, path in [
        ("GET", "/admin/models/nope"),
        ("POST", "/admin/models/nope/versions/1/load"),
        ("POST", "/admin/models/mlp/versions/9/load"),
        ("POST", "/admin/models/mlp/versions/0/load"),
        ("POST", "/admin/models/no%20such/versions/1/load"),  # a name no model can have
        ("POST", "/admin/models/nope/rollback"),
        ("POST", "/v2/repository/models/nope/load"),
        ("POST", "/v2/repository/models/nope/unload"),
    ]:
        response = await admin.call(method, path)
        assert response.status_code == 404, (path, response.text)
        assert "not found" in response.json()["error"]
    for version in ["abc", "%C2%B3", "-1", "1" * 19]:  # "\u00b3" passes str.isdigit(): it was a 500
        response = await admin.call("POST", f"/admin/models/mlp/versions/{version}/unload")
        assert response.status_code == 400, (version, response.text)
        assert response.json()["error"].startswith("version: expected a version number (a positive integer")
    unknown_version = await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 9})
    assert (unknown_version.status_code, unknown_version.json()) == (404, {"error": "model 'mlp' version 9 not found"})
    for body in [b"{", b"[]", b'{"version": 0}', b'{"version": "two"}', b'{"version": 2, "force": "x"}', b""]:
        response = await admin.call(
            "PUT", "/admin/models/mlp/aliases/production", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"].startswith("body")
    bad_alias = await admin.call("PUT", "/admin/models/mlp/aliases/-x", json={"version": 2})
    assert bad_alias.status_code == 400 and bad_alias.json()["error"].startswith("alias: must start")
    bad_time = await admin.call("GET", "/admin/audit", params={"since": "last tuesday"})
    assert bad_time.status_code == 400 and "ISO 8601" in bad_time.json()["error"]
    assert (await admin.call("POST", "/admin/models/mlp/rollback")).status_code == 409
    assert (await admin.model())["serving"] == 3


async def test_names_reach_only_what_the_scan_found_never_a_path(tmp_path: Path, repository: Path) -> None:
    outside = tmp_path / "outside"
    write_model_version(outside, "secret", 1)
    os.symlink(outside / "secret", repository / "linked")
    os.symlink(outside / "secret" / "1", repository / "other" / "7")
    async for admin in serving_admin(settings_for(repository)):
        index = (await admin.call("POST", "/v2/repository/index")).json()
        assert {(e["name"], e["version"]) for e in index} == {("mlp", "1"), ("mlp", "2"), ("mlp", "3"), ("other", "1")}
        for path in [
            "/admin/models/linked/versions/1/load",
            "/admin/models/other/versions/7/load",
            "/admin/models/../versions/1/load",
            "/admin/models/%2e%2e/versions/1/load",
            "/admin/models/..%2Foutside%2Fsecret/versions/1/load",
            "/admin/models/%2Ftmp%2Foutside%2Fsecret/versions/1/load",
            "/admin/models/mlp/versions/..%2F..%2F1/load",
            "/v2/repository/models/linked/load",
            "/v2/repository/models/..%2Foutside%2Fsecret/load",
        ]:
            response = await admin.call("POST", path)
            assert response.status_code == 404, (path, response.text)
        assert {m["name"] for m in (await admin.call("GET", "/admin/models")).json()["models"]} == {"mlp", "other"}


# --- repository extension, rescan, persistence ------------------------------------------------------


async def test_repository_extension_speaks_tritons_shapes(admin: Admin) -> None:
    index = await admin.call("POST", "/v2/repository/index")
    assert index.status_code == 200
    assert index.json()[:3] == [
        {"name": "mlp", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"},
        {"name": "mlp", "version": "2", "state": "UNAVAILABLE", "reason": "not loaded"},
        {"name": "mlp", "version": "3", "state": "READY"},
    ]
    ready = await admin.call("POST", "/v2/repository/index", json={"ready": True})
    assert [(e["name"], e["version"]) for e in ready.json()] == [("mlp", "3"), ("other", "1")]
    unload = await admin.call(
        "POST", "/v2/repository/models/mlp/unload", json={"parameters": {"unload_dependents": False}}
    )
    assert (unload.status_code, unload.content) == (200, b"")
    gone = await admin.infer()
    assert (gone.status_code, gone.json()) == (503, {"error": "model 'mlp' is unloaded; load it to serve it again"})
    assert (await admin.client.get("/v2/health/ready")).status_code == 200  # the others still serve
    assert (await admin.call("POST", "/admin/models/mlp/versions/2/load")).status_code == 409
    assert (await admin.state(3))["state"] == "UNLOADED"
    load = await admin.call("POST", "/v2/repository/models/mlp/load", json={})
    assert (load.status_code, load.content) == (200, b"")
    assert (await admin.infer()).json()["model_version"] == "3"
    with_config = await admin.call(
        "POST", "/v2/repository/models/mlp/load", json={"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}}
    )
    assert with_config.status_code == 400
    assert "config, file:1/model.onnx not supported" in with_config.json()["error"]


async def test_rescan_finds_a_version_published_after_start(repository: Path, admin: Admin) -> None:
    write_model_version(repository, "mlp", 4)
    write_model_version(repository, "fresh", 1)
    rescan = await admin.call("POST", "/admin/repository/rescan")
    assert rescan.json() == {"added": [{"model": "fresh", "version": 1}, {"model": "mlp", "version": 4}], "removed": []}
    assert (await admin.state(4))["state"] == "AVAILABLE"
    assert (await admin.infer("fresh")).json()["model_version"] == "1"  # a new model serves, as at start
    assert (await admin.infer()).json()["model_version"] == "3"  # a new version waits for a promotion
    assert (await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 4})).status_code == 200
    assert (await admin.infer()).json()["model_version"] == "4"


async def test_a_restarted_server_serves_what_production_named(repository: Path) -> None:
    async for admin in serving_admin(settings_for(repository)):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
        await admin.call("POST", "/admin/models/mlp/versions/2/load")
    async for admin in serving_admin(settings_for(repository)):
        view = await admin.model()
        assert (view["serving"], view["loaded"], view["retained"]) == (1, [2], 3)
        assert [v["state"] for v in view["versions"]] == ["READY", "READY", "READY"]
        assert view["previous_production"] == 3
        assert len((await admin.call("GET", "/admin/audit")).json()["entries"]) == 2


async def test_without_keep_previous_loaded_the_old_production_unloads_after_a_promotion(repository: Path) -> None:
    async for admin in serving_admin(settings_for(repository, keep_previous_loaded=False)):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 2})
        assert [v["state"] for v in (await admin.model())["versions"]] == ["AVAILABLE", "READY", "UNLOADED"]
        rolled = await admin.call("POST", "/admin/models/mlp/rollback")  # loads 3 again
        assert rolled.status_code == 200 and (await admin.infer()).json()["model_version"] == "3"


async def test_audit_log_answers_who_held_production_at_a_time(admin: Admin) -> None:
    await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 2})
    entries = (await admin.call("GET", "/admin/audit", params={"model": "mlp"})).json()["entries"]
    moment = entries[-1]["at"]
    await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1}, token=CI)
    await admin.call("POST", "/admin/models/other/versions/1/load")
    until = await admin.call("GET", "/admin/audit", params={"model": "mlp", "alias": "production", "until": moment})
    (held,) = until.json()["entries"]
    assert (held["who"], held["to"], held["result"]) == ("alice", 2, "ok")
    since = await admin.call("GET", "/admin/audit", params={"model": "mlp", "since": moment, "limit": 1})
    assert [(e["who"], e["to"]) for e in since.json()["entries"]] == [("ci", 1)]
    assert len((await admin.call("GET", "/admin/audit")).json()["entries"]) == 3


async def test_admin_operations_on_one_model_run_one_after_the_other(admin: Admin) -> None:
    first, second = await asyncio.gather(
        admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1}),
        admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 2}, token=CI),
    )
    changes = sorted((first.json()["change"], second.json()["change"]), key=lambda c: c["revision"])
    assert [c["revision"] for c in changes] == [1, 2]
    assert changes[1]["from"] == changes[0]["to"]  # the second one saw the first one's result
    assert (await admin.model())["serving"] == changes[1]["to"]


async def test_an_unwritable_control_state_refuses_the_change_and_keeps_serving(
    tmp_path: Path, repository: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    async for admin in serving_admin(settings_for(repository, control_state_path=blocker / "control.json")):
        blocker.write_text("a file where the control state's folder should be")  # as a read-only mount
        response = await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
        assert response.status_code == 503
        assert response.json()["error"].startswith(f"control state {blocker / 'control.json'} cannot be ")
        assert (await admin.model())["serving"] == 3
        assert (await admin.infer()).json()["model_version"] == "3"


async def test_the_repository_poll_finds_new_versions_on_its_own(repository: Path) -> None:
    async for admin in serving_admin(settings_for(repository, repository_poll_interval_s=0.01)):
        write_model_version(repository, "mlp", 4)
        give_up = time.monotonic() + UNTIL_HANG_GUARD_S  # a hang guard: the poll runs every 10 ms
        while len((await admin.model())["versions"]) < 4:
            assert time.monotonic() < give_up, "the repository poll never found version 4"
            await asyncio.sleep(0.005)
        assert (await admin.state(4))["state"] == "AVAILABLE"
