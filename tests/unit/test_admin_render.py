"""What `hotserve models` prints for each change: the admin API in process (real registry, tiny
models) answers, `server/admin_render.py` says what happened in words an operator reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.admin_render import evidence_table, render, replicas_table
from tests.fakes import write_model_version
from tests.unit.test_admin_api import Admin, serving_admin, settings_for


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    root = tmp_path / "repository"
    for version in (1, 2, 3):
        write_model_version(root, "mlp", version)
    async for client in serving_admin(settings_for(root)):
        yield client


async def _said(admin: Admin, action: str, method: str, path: str, body: dict[str, Any] | None = None) -> str:
    response = await admin.call(method, f"/admin/models/mlp{path}", json=body)
    assert response.status_code == 200, response.text
    return render(action, response.json()).splitlines()[0]


async def test_each_change_is_said_as_what_it_did(admin: Admin) -> None:
    # No production alias yet: the newest version serves, and promoting it names it.
    said = await _said(admin, "promote", "POST", "/promote", {"version": 3})
    assert said == "promoted mlp production: v3, which was serving without a production alias (revision 1)"
    said = await _said(admin, "promote", "PUT", "/aliases/canary", {"version": 2})
    assert said == "set mlp canary: v2 (new alias) (revision 2)"
    weights = {"weights": {"production": 90, "canary": 10}}
    said = await _said(admin, "traffic", "PUT", "/traffic", weights)
    assert said == "traffic set for mlp: canary=10, production=90 (v2 10%, v3 90%) (revision 3)"
    said = await _said(admin, "traffic", "PUT", "/traffic", weights)
    assert said == "no change: mlp traffic already canary=10, production=90 (v2 10%, v3 90%) (revision 3)"
    said = await _said(admin, "traffic", "DELETE", "/traffic")
    assert said == "traffic cleared for mlp: every unpinned request goes to production (revision 4)"
    said = await _said(admin, "unload", "POST", "/versions/1/unload")
    assert said == (
        "no change: mlp v1 is not kept loaded by a load or as the previous production: nothing to unload (revision 4)"
    )
    said = await _said(admin, "unalias", "DELETE", "/aliases/canary")
    assert said == (
        "deleted alias canary of mlp (it named v2) (revision 5); v2 was unloaded with it: no alias, traffic weight, "
        "shadow or load kept it loaded (`hotserve models load mlp 2` keeps a version loaded)"
    )
    said = await _said(admin, "unalias", "DELETE", "/aliases/canary")
    assert said == "no change: mlp has no alias canary (revision 5)"
    shadow = {"version": 2, "share": 0.2, "tolerance": 1e-4, "threshold": None}
    said = await _said(admin, "shadow", "PUT", "/shadow", shadow)
    assert said == (
        "shadow set for mlp: v2 sees 20% of unpinned requests, agreement: within 0.0001 on every output "
        "(as the shadow policy asks) (revision 6)"
    )
    said = await _said(admin, "shadow", "DELETE", "/shadow")
    assert said == "shadow cleared for mlp (it was v2) (revision 7)"
    said = await _said(admin, "promote", "POST", "/promote", {"version": 2})
    assert said == "promoted mlp production: 3 -> 2 (revision 8)"
    said = await _said(admin, "promote", "POST", "/promote", {"version": 2})
    assert said == "no change: mlp production already names v2 (revision 8)"


async def test_a_forced_promotion_shows_as_forced_in_the_history(admin: Admin) -> None:
    body = {"version": 2, "requirements": {"min_requests": 1000}, "force": True}
    assert (await admin.call("POST", "/admin/models/mlp/promote", json=body)).status_code == 200
    entries = (await admin.call("GET", "/admin/audit?model=mlp")).json()
    header, row = render("history", entries).splitlines()
    assert row.split()[2:4] == ["promote", "production"]
    assert " ok (forced) " in row and "observed 0 requests" in row


async def test_the_list_shows_load_figures_only_while_loaded_and_names_an_implicit_production(admin: Admin) -> None:
    def rows(text: str) -> dict[str, list[str]]:
        lines = text.splitlines()
        header = lines[0]
        starts = [header.index(name) for name in ("VERSION", "STATE", "ALIASES", "SERVING", "LOADED AT", "MEMORY")]
        return {
            line[starts[0] :].split()[0]: [line[s:].split()[0] if line[s:].strip() else "" for s in starts[1:]]
            for line in lines[1:]
            if line.startswith("mlp")
        }

    assert (await admin.call("POST", "/admin/models/mlp/versions/1/load")).status_code == 200
    assert (await admin.call("POST", "/admin/models/mlp/versions/1/unload")).status_code == 200
    shown = render("list", (await admin.call("GET", "/admin/models")).json())
    listed = rows(shown)
    state, aliases, serving, loaded_at, memory = listed["3"]
    assert (state, aliases, serving) == ("READY", "(production)", "*") and loaded_at != "-" and memory != "-"
    assert listed["1"][0] == "UNLOADED" and listed["1"][3:] == ["-", "-"]  # no LOADED AT or MEMORY once unloaded
    assert listed["2"][0] == "AVAILABLE" and listed["2"][1] == "-"
    assert shown.splitlines()[-1].startswith("(production): no production alias is set")
    assert (await admin.call("POST", "/admin/models/mlp/promote", json={"version": 3})).status_code == 200
    shown = render("list", (await admin.call("GET", "/admin/models")).json())
    assert rows(shown)["3"][1] == "production" and "(production)" not in shown


def test_evidence_rounds_ratios_and_never_shows_a_near_miss_as_a_round_number() -> None:
    evidence = {
        "candidate": {"requests": 1500, "errors": 2, "p99_s": 0.0041234567},
        "production": {"requests": 9000, "errors": 0, "p99_s": 0.0031234567},
        "p99_ratio": 1.3201612903225807,
        "error_ratio": 0.0013333333333333333,
        "shadow_compared": 400,
        "shadow_dropped": 0,
        "shadow_failed": 0,
        "shadow_agreement": 0.99995,
        "observed": 1900,
    }
    rows = dict(line.split("  ", 1) for line in evidence_table(evidence).splitlines()[1:])
    assert rows["p99 candidate / production"].strip() == "4.12 ms / 3.12 ms"
    assert rows["p99 ratio"].strip() == "1.32x"
    assert rows["error ratio"].strip() == "0.13%"
    assert rows["shadow agreement"].strip() == "99.995000%"  # not "100.00%"


def test_replicas_show_when_they_reported_as_a_time_and_an_age() -> None:
    doc = {
        "revision": 7,
        "replicas": [
            {
                "replica": "pod-a",
                "revision": 7,
                "reported_at": 1764711611.25,
                "models": {"fraud": {"2": 90, "4": 10}},
                "fallbacks": [],
            },
        ],
    }
    _, _, row = replicas_table(doc, now=1764711614.0).splitlines()
    assert "2025-12-02 21:40:11 UTC (3 s ago)" in row and "fraud: v2=90, v4=10" in row
