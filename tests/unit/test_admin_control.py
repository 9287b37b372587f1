"""The controller through the admin API (real registry, tiny models): unloads a traffic weight or
the shadow still names are refused, `serving` under a split, JSON bodies whatever the
Content-Type, audited refusals and rescans, prepare/commit leaving nothing loaded for nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from server.admin_cli import models_table
from tests.fakes import break_version, write_model_version
from tests.unit.test_admin_api import serving_admin, settings_for

FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends


def repository_with(root: Path, versions: int = 3) -> Path:
    for version in range(1, versions + 1):
        write_model_version(root, "mlp", version)
    return root


async def test_unloading_a_version_a_traffic_weight_or_the_shadow_names_is_409_and_it_keeps_serving(
    tmp_path: Path,
) -> None:
    root = repository_with(tmp_path / "repository")
    async for admin in serving_admin(settings_for(root)):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
        split = await admin.call("PUT", "/admin/models/mlp/traffic", json={"weights": {"production": 90, "2": 10}})
        assert split.status_code == 200, split.text
        weighted = await admin.call("POST", "/admin/models/mlp/versions/2/unload")
        assert (weighted.status_code, weighted.json()) == (
            409,
            {"error": "model 'mlp' version 2 is named by traffic weight 2=10; change or clear the traffic split first"},
        )
        assert (
            await admin.call("PUT", "/admin/models/mlp/shadow", json={"version": 3, "share": 0.5})
        ).status_code == 200
        shadowed = await admin.call("POST", "/admin/models/mlp/versions/3/unload")
        assert (shadowed.status_code, shadowed.json()) == (
            409,
            {"error": "model 'mlp' version 3 is the shadow (share 0.5); stop shadowing it first"},
        )
        view = await admin.model()
        assert [(v["version"], v["state"]) for v in view["versions"]] == [(1, "READY"), (2, "READY"), (3, "READY")]
        assert view["routing"]["weights"] == {"1": 90, "2": 10} and view["routing"]["shadow_ready"]
        assert (await admin.infer(version=2)).json()["model_version"] == "2"
        entries = (await admin.call("GET", "/admin/audit")).json()["entries"]
        assert [(e["action"], e["result"], e["from"]) for e in entries if e["action"] == "unload"] == [
            ("unload", "refused", 2),
            ("unload", "refused", 3),
        ]
        # Once the policy no longer names them, they unload.
        assert (await admin.call("DELETE", "/admin/models/mlp/traffic")).status_code == 200
        assert (await admin.call("DELETE", "/admin/models/mlp/shadow")).status_code == 200
        assert (await admin.state(2))["state"] == "UNLOADED"
        assert (await admin.call("POST", "/admin/models/mlp/versions/3/unload")).status_code == 200  # was retained
        assert (await admin.state(3))["state"] == "UNLOADED"


async def test_serving_is_production_under_a_split_and_the_split_is_shown_as_such(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository", versions=2)
    async for admin in serving_admin(settings_for(root)):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
        await admin.call("PUT", "/admin/models/mlp/aliases/canary", json={"version": 2})
        await admin.call("PUT", "/admin/models/mlp/traffic", json={"weights": {"production": 90, "canary": 10}})
        served = {(await admin.model())["serving"] for _ in range(200)}
        listed = {m["serving"] for _ in range(50) for m in (await admin.call("GET", "/admin/models")).json()["models"]}
        assert served == listed == {1}  # 200 draws from a 90/10 split would name 2 (p = 1 - 0.9^200)
        view = await admin.model()
        assert view["routing"]["weights"] == {"1": 90, "2": 10}
        header, *rows = models_table([view]).splitlines()
        assert header.split()[:6] == ["MODEL", "VERSION", "STATE", "ALIASES", "SERVING", "SPLIT"]
        assert [row.split()[:6] for row in rows] == [
            ["mlp", "1", "READY", "production", "*", "90%"],
            ["mlp", "2", "READY", "canary", "-", "10%"],
        ]
        assert (await admin.call("DELETE", "/admin/models/mlp/traffic")).status_code == 200
        header, *rows = models_table([await admin.model()]).splitlines()
        assert [row.split()[4:6] for row in rows] == [["*", "-"], ["-", "-"]]


async def test_json_bodies_are_read_whatever_their_content_type(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository")
    async for admin in serving_admin(settings_for(root)):
        for method, path, body in [
            ("PUT", "/admin/models/mlp/aliases/canary", {"version": 2}),
            ("PUT", "/admin/models/mlp/traffic", {"weights": {"production": 80, "canary": 20}}),
            ("PUT", "/admin/models/mlp/shadow", {"version": 1, "share": 0.25}),
            ("POST", "/admin/models/mlp/promote", {"version": 2, "requirements": {"min_requests": 0}}),
            ("POST", "/v2/repository/models/mlp/unload", {"parameters": {"unload_dependents": False}}),
            ("POST", "/v2/repository/models/mlp/load", {"parameters": {}}),
        ]:
            response = await admin.call(method, path, content=json.dumps(body), headers=FORM)
            assert response.status_code == 200, (path, response.text)
        view = await admin.model()
        assert view["aliases"] == {"canary": 2, "production": 2} and view["shadow"]["share"] == 0.25
        assert view["traffic"] == {"canary": 20, "production": 80} and view["serving"] == 2
        index = await admin.call("POST", "/v2/repository/index", content=b'{"ready": true}', headers=FORM)
        assert {(e["name"], e["version"]) for e in index.json()} == {("mlp", "1"), ("mlp", "2"), ("mlp", "3")}
        form = await admin.call("PUT", "/admin/models/mlp/aliases/canary", content=b"version=3", headers=FORM)
        assert form.status_code == 400
        assert form.json()["error"].startswith("body: (body): Invalid JSON")
        assert "read as JSON whatever its Content-Type" in form.json()["error"]
        empty = await admin.call("PUT", "/admin/models/mlp/aliases/canary", content=b"", headers=FORM)
        assert (empty.status_code, empty.json()) == (400, {"error": "body: expected a JSON object, got an empty body"})


async def test_refusals_before_any_change_and_rescans_a_caller_asks_for_are_audited(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository", versions=1)
    async for admin in serving_admin(settings_for(root)):
        assert (await admin.call("PUT", "/admin/models/mlp/aliases/-x", json={"version": 1})).status_code == 400
        refused = await admin.call(
            "POST", "/admin/models/mlp/promote", json={"version": 7, "requirements": {"min_requests": 1}}
        )
        assert refused.status_code == 404
        write_model_version(root, "mlp", 2)
        assert len((await admin.call("POST", "/v2/repository/index")).json()) == 2  # rescans first
        assert len((await admin.call("POST", "/v2/repository/index")).json()) == 2  # nothing new: not audited
        write_model_version(root, "fresh", 1)
        assert (await admin.call("POST", "/v2/repository/models/mlp/load")).status_code == 200
        entries = (await admin.call("GET", "/admin/audit")).json()["entries"]
        assert [(e["action"], e["result"], e["detail"]) for e in entries] == [
            ("alias", "refused", "alias: must start with a letter and hold only letters, digits and _.- (at most 64)"),
            ("promote", "refused", "model 'mlp' version 7 not found"),
            ("rescan", "ok", "added mlp v2; removed nothing"),
            ("rescan", "ok", "added fresh v1; removed nothing"),
            ("repository_load", "ok", None),  # no production yet: the newest version, 2, takes it
        ]


async def test_a_refused_change_unloads_what_its_preparation_loaded_and_changes_nothing(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository")
    break_version(root / "mlp" / "3", "sha256")
    async for admin in serving_admin(settings_for(root)):
        assert (await admin.model())["serving"] == 2  # 3 failed at start
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 2})
        refused = await admin.call(
            "PUT", "/admin/models/mlp/traffic", json={"weights": {"production": 80, "1": 10, "3": 10}}
        )
        assert refused.status_code == 409 and "sha256" in refused.json()["error"]
        view = await admin.model()
        assert view["traffic"] == {} and view["routing"]["weights"] == {"2": 100}
        assert [(v["version"], v["state"]) for v in view["versions"]] == [
            (1, "UNLOADED"),  # loaded for the change, unloaded when it was refused
            (2, "READY"),
            (3, "FAILED"),
        ]
        assert admin.sample("hotserve_model_loads_total", {"model": "mlp", "result": "success"}) == 2
        assert (await admin.infer(version=1)).status_code == 503


async def test_loading_again_a_version_the_state_already_keeps_loaded_routes_it(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository", versions=2)
    control = root / ".hotserve" / "control.json"
    control.parent.mkdir()
    control.write_text(json.dumps({"revision": 1, "models": {"mlp": {"aliases": {"production": 1}, "loaded": [2]}}}))
    break_version(root / "mlp" / "2", "sha256")
    async for admin in serving_admin(settings_for(root)):
        assert (await admin.state(2))["state"] == "FAILED"
        shutil.rmtree(root / "mlp" / "2")
        write_model_version(root, "mlp", 2)  # the operator puts the good file back
        again = await admin.call("POST", "/admin/models/mlp/versions/2/load")
        assert again.status_code == 200, again.text
        assert again.json()["change"]["changed"] is False  # the stored state already wanted it
        assert (await admin.state(2))["state"] == "READY"
        assert (await admin.infer(version=2)).json()["model_version"] == "2"
