"""Traffic split, shadow and guarded promotion through the admin API (real registry, tiny models)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.fakes import break_version, until, write_model_version
from tests.unit.test_admin_api import serving_admin, settings_for

HANG_GUARD_S = 30

EVERY_COPY = {"shadow_yield_to_primary": False, "shadow_max_inference_share": 1.0}
"""Settings under which every copy drawn is sent (up to `shadow_max_pending`): the rules that drop
copies while the primary is busy or the shadow over its share of inference time decide on queue
lengths and measured run times, so on a loaded machine they drop copies a test counts. They are
proven with driven state in `test_shadow_runner.py`; tests here count what copies show."""


def repository_with(root: Path, versions: int = 3) -> Path:
    for version in range(1, versions + 1):
        write_model_version(root, "mlp", version)
    return root


async def test_a_canary_split_routes_by_weight_sticky_by_key_and_pinned_requests_bypass_it(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository")
    async for admin in serving_admin(settings_for(root)):
        assert (await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})).status_code == 200
        assert (await admin.call("PUT", "/admin/models/mlp/aliases/canary", json={"version": 2})).status_code == 200
        response = await admin.call(
            "PUT", "/admin/models/mlp/traffic", json={"weights": {"production": 70, "canary": 30}}
        )
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["model"]["traffic"] == {"canary": 30, "production": 70}
        assert doc["model"]["routing"]["weights"] == {"1": 70, "2": 30}
        versions: Counter[str] = Counter()
        for _ in range(600):
            versions[(await admin.infer()).json()["model_version"]] += 1
        assert abs(versions["2"] / 600 - 0.30) < 0.08, versions
        sticky = {
            (
                await admin.client.post(
                    "/v2/models/mlp/infer",
                    headers={"Hotserve-Routing-Key": "c-42"},
                    json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]}]},
                )
            ).json()["model_version"]
            for _ in range(20)
        }
        assert len(sticky) == 1
        pinned = [(await admin.infer(version=1)).json()["model_version"] for _ in range(20)]
        assert set(pinned) == {"1"}  # pinned requests bypass the split
        cleared = await admin.call("DELETE", "/admin/models/mlp/traffic")
        assert cleared.json()["model"]["routing"]["weights"] == {"1": 100}
        assert {(await admin.infer()).json()["model_version"] for _ in range(30)} == {"1"}
        audit = (await admin.call("GET", "/admin/audit?model=mlp")).json()["entries"]
        assert [e["detail"] for e in audit if e["action"] == "traffic"] == ["canary=30, production=70", "cleared"]


async def test_bad_policies_are_refused_with_the_reason_and_change_nothing(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository")
    break_version(root / "mlp" / "3", "sha256")
    async for admin in serving_admin(settings_for(root)):
        cases = [
            ({"production": 90, "canary": 20}, 400, "weights summing to 100"),
            ({"production": 90, "blue": 10}, 400, "traffic.blue: is neither an alias"),
            ({"production": 90, "9": 10}, 400, "names version 9, which is not in the repository"),
            ({"production": 90, "3": 10}, 409, "sha256"),
        ]
        for weights, status, message in cases:
            response = await admin.call("PUT", "/admin/models/mlp/traffic", json={"weights": weights})
            assert response.status_code == status and message in response.json()["error"], response.text
        assert (
            await admin.call("PUT", "/admin/models/nope/traffic", json={"weights": {"production": 100}})
        ).status_code == 404
        assert (await admin.model())["traffic"] == {}
        assert (await admin.call("PUT", "/admin/models/mlp/shadow", json={"version": 3})).status_code == 409


async def test_a_shadow_gets_copies_whose_agreement_guards_promotion_and_force_is_audited(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository")
    async for admin in serving_admin(settings_for(root, **EVERY_COPY)):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
        shadow = await admin.call(
            "PUT", "/admin/models/mlp/shadow", json={"version": 2, "share": 1.0, "tolerance": 1e-6}
        )
        assert shadow.status_code == 200 and shadow.json()["model"]["routing"]["shadow_ready"]
        answers = [await admin.infer() for _ in range(40)]
        assert {a.json()["model_version"] for a in answers} == {"1"}  # the shadow never answers
        await until(
            lambda: (
                admin.sample("hotserve_shadow_requests_total", {"model": "mlp", "version": "2", "outcome": "compared"})
                >= 40
            )
        )
        evidence = (await admin.call("GET", "/admin/models/mlp/versions/2/evidence")).json()
        assert evidence["shadow_compared"] >= 40 and evidence["shadow_agreement"] == 0.0  # other weights

        guard = {"min_requests": 10, "min_agreement": 0.99}
        refused = await admin.call("POST", "/admin/models/mlp/promote", json={"version": 2, "requirements": guard})
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert "shadow agreement 0 over" in body["error"] and body["evidence"]["shadow_compared"] >= 40
        assert body["shortfalls"] == [s for s in body["shortfalls"] if "agreement" in s]
        assert (await admin.model())["serving"] == 1

        forced = await admin.call(
            "POST", "/admin/models/mlp/promote", json={"version": 2, "requirements": guard, "force": True}
        )
        assert forced.status_code == 200 and (await admin.model())["serving"] == 2
        entries = [
            e for e in (await admin.call("GET", "/admin/audit?model=mlp")).json()["entries"] if e["action"] == "promote"
        ]
        assert [(e["result"], e["forced"]) for e in entries] == [("refused", False), ("ok", True)]
        assert "shadow agreement" in entries[-1]["detail"] and entries[-1]["who"] == "alice"
        met = await admin.call(
            "POST", "/admin/models/mlp/promote", json={"version": 1, "requirements": {"min_requests": 0}}
        )
        assert met.status_code == 200 and (await admin.model())["serving"] == 1


async def test_a_shadow_that_always_fails_never_fails_the_primary(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository", versions=1)
    write_model_version(root, "mlp", 2, features=4)  # takes [N, 4]: every copy of a [N, 3] request fails
    async for admin in serving_admin(settings_for(root, **EVERY_COPY)):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
        assert (await admin.call("PUT", "/admin/models/mlp/shadow", json={"version": 2})).status_code == 200
        statuses = {(await admin.infer()).status_code for _ in range(30)}
        assert statuses == {200}
        await until(
            lambda: (
                admin.sample("hotserve_shadow_requests_total", {"model": "mlp", "version": "2", "outcome": "failed"})
                >= 30
            )
        )


async def test_a_version_unloaded_and_loaded_again_starts_with_zero_evidence(tmp_path: Path) -> None:
    root = repository_with(tmp_path / "repository")
    async for admin in serving_admin(settings_for(root)):
        await admin.call("PUT", "/admin/models/mlp/aliases/production", json={"version": 1})
        assert (await admin.call("POST", "/admin/models/mlp/versions/2/load")).status_code == 200
        assert {(await admin.infer(version=2)).status_code for _ in range(12)} == {200}
        before = (await admin.call("GET", "/admin/models/mlp/versions/2/evidence")).json()
        assert before["candidate"]["requests"] == 12 and before["observed"] == 12

        assert (await admin.call("POST", "/admin/models/mlp/versions/2/unload")).status_code == 200
        assert (await admin.state(2))["state"] != "READY"
        assert (await admin.call("POST", "/admin/models/mlp/versions/2/load")).status_code == 200
        after = (await admin.call("GET", "/admin/models/mlp/versions/2/evidence")).json()
        assert (after["candidate"]["requests"], after["observed"], after["candidate"]["p99_s"]) == (0, 0, None)
        refused = await admin.call(
            "POST", "/admin/models/mlp/promote", json={"version": 2, "requirements": {"min_requests": 12}}
        )
        assert refused.status_code == 409 and "observed 0 requests" in refused.json()["error"]
        await admin.infer(version=2)
        assert (await admin.call("GET", "/admin/models/mlp/versions/2/evidence")).json()["candidate"]["requests"] == 1
