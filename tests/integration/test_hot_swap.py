"""Hot swap on a real `hotserve serve` process under load: no failed request, every answer from a
version routable when it was asked, failed loads that never touch traffic, the repository
extension through the unchanged `tritonclient.http`, and the `hotserve models` CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from load_tests.server_process import ServerProcess, start_server
from server.cli import main as hotserve
from tests.fakes import break_version, write_model_version

pytestmark = pytest.mark.integration

TOKEN = "integration-admin-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIENTS = 16
ANSWERS_PER_STEP = 60
BROKEN = {3: "sha256", 4: "graph", 5: "warm_up"}
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.5, -1.0, 2.0]}]}


@pytest.fixture(scope="module")
def swap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[int, str]]]:
    """mlp v1 (production) and v2, plus v3-v5 that cannot load; other v1 and v2."""
    root = tmp_path_factory.mktemp("swap_repository")
    reasons = {}
    for version in (1, 2, *BROKEN):
        write_model_version(root, "mlp", version)
    for version, how in BROKEN.items():
        reasons[version] = break_version(root / "mlp" / str(version), how)
    for version in (1, 2):
        write_model_version(root, "other", version)
    control = root / ".hotserve" / "control.json"
    control.parent.mkdir()
    control.write_text(json.dumps({"models": {"mlp": {"aliases": {"production": 1}}}}))
    server = start_server(
        root,
        tmp_path_factory.mktemp("logs") / "swap.log",
        ready_path="/v2/health/ready",
        env={"HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}"},
    )
    yield server, reasons
    assert server.stop() == 0, server.log()


@dataclass
class Answer:
    sent: float
    received: float
    status: int
    version: str | None


@dataclass
class Load:
    """`CLIENTS` clients sending unpinned requests to mlp until stopped; every answer recorded."""

    url: str
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def client(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = await client.post("/v2/models/mlp/infer", json=BODY)
                    status, version = response.status_code, response.json().get("model_version")
                except httpx.HTTPError as error:
                    status, version = 0, repr(error)
                async with self._arrived:
                    self.answers.append(Answer(sent, time.monotonic(), status, version))
                    self._arrived.notify_all()

    async def after(self, moment: float, count: int = ANSWERS_PER_STEP) -> list[Answer]:
        """Wait until `count` requests sent after `moment` have their answer; returns those."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: sum(a.sent > moment for a in self.answers) >= count), 60
            )
            return [a for a in self.answers if a.sent > moment]

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Switch:
    """An admin call that moves `production`: in force somewhere between `started` and `ended`."""

    started: float
    ended: float
    version: str


def routable(answer: Answer, initial: str, switches: list[Switch]) -> set[str]:
    """Versions unpinned requests could be routed to while `answer` was in flight."""
    current = initial
    for switch in switches:
        if switch.ended < answer.sent:
            current = switch.version  # published before the request was even sent
    return {current} | {s.version for s in switches if s.ended >= answer.sent and s.started <= answer.received}


async def admin(client: httpx.AsyncClient, method: str, path: str, **kwargs: object) -> httpx.Response:
    response = await client.request(method, path, headers=AUTH, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, (path, response.text)
    return response


async def test_load_promote_rollback_promote_unload_under_load_fails_no_request(
    swap_server: tuple[ServerProcess, dict[int, str]],
) -> None:
    server, _ = swap_server
    load = Load(server.base_url)
    clients = [asyncio.ensure_future(load.client()) for _ in range(CLIENTS)]
    switches: list[Switch] = []
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as control:
            await load.after(time.monotonic() - 60)  # traffic flowing on v1
            loaded = await admin(control, "POST", "/admin/models/mlp/versions/2/load")
            assert [v["state"] for v in loaded.json()["model"]["versions"][:2]] == ["READY", "READY"]
            await load.after(time.monotonic())
            for step, (method, path, body, to) in enumerate(
                [
                    ("PUT", "/admin/models/mlp/aliases/production", {"version": 2}, "2"),
                    ("POST", "/admin/models/mlp/rollback", None, "1"),
                    ("PUT", "/admin/models/mlp/aliases/production", {"version": 2}, "2"),
                ]
            ):
                started = time.monotonic()
                changed = await admin(control, method, path, json=body)
                switches.append(Switch(started, time.monotonic(), to))
                assert changed.json()["change"]["to"] == int(to), step
                after = await load.after(switches[-1].ended)
                assert {a.version for a in after} == {to}, step
            unload_started = time.monotonic()
            unloaded = await admin(control, "POST", "/admin/models/mlp/versions/1/unload")
            assert unloaded.json()["model"]["versions"][0]["state"] == "UNLOADED"
            assert {a.version for a in await load.after(unload_started)} == {"2"}
            metrics = (await control.get("/metrics")).text
    finally:
        load.stop()
        await asyncio.gather(*clients)

    failed = [a for a in load.answers if a.status != 200]
    assert not failed, failed[:5]
    wrong = [(a, routable(a, "1", switches)) for a in load.answers if a.version not in routable(a, "1", switches)]
    assert not wrong, wrong[:5]
    versions = [a.version for a in sorted(load.answers, key=lambda a: a.received)]
    changes = sum(1 for before, after in zip(versions, versions[1:], strict=False) if before != after)
    assert changes >= 3, "answers should switch version at each promotion"
    assert 'hotserve_model_swaps_total{model="mlp",result="success"} 3.0' in metrics
    assert 'hotserve_model_version_info{alias="production",model="mlp",version="2"} 1.0' in metrics
    print(f"\n{len(load.answers)} answers from {CLIENTS} clients, 0 failed, {changes} version changes")


async def test_versions_that_cannot_load_fail_with_their_reason_while_traffic_flows(
    swap_server: tuple[ServerProcess, dict[int, str]],
) -> None:
    server, reasons = swap_server
    load = Load(server.base_url)
    clients = [asyncio.ensure_future(load.client()) for _ in range(CLIENTS)]
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as control:
            serving = (await admin(control, "GET", "/admin/models/mlp")).json()["serving"]
            started = time.monotonic()
            await load.after(started - 60)
            for version, reason in reasons.items():
                for method, path, body in [
                    ("POST", f"/admin/models/mlp/versions/{version}/load", None),
                    ("PUT", "/admin/models/mlp/aliases/production", {"version": version}),
                ]:
                    response = await control.request(method, path, headers=AUTH, json=body)
                    assert response.status_code == 409, response.text
                    assert response.json()["error"].startswith(f"model 'mlp' version {version} is FAILED: ")
                    assert reason in response.json()["error"]
            view = (await admin(control, "GET", "/admin/models/mlp")).json()
            await load.after(time.monotonic())
    finally:
        load.stop()
        await asyncio.gather(*clients)
    assert view["serving"] == serving and view["aliases"]["production"] == serving
    for version, reason in reasons.items():
        (state,) = [v for v in view["versions"] if v["version"] == version]
        assert state["state"] == "FAILED" and reason in state["reason"]
    during = [a for a in load.answers if a.sent > started]
    assert during and all(a.status == 200 and a.version == str(serving) for a in during)


def test_repository_extension_through_the_unchanged_triton_client(
    swap_server: tuple[ServerProcess, dict[int, str]],
) -> None:
    server, _ = swap_server
    client = httpclient.InferenceServerClient(server.base_url.removeprefix("http://"))
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_repository_index()
    assert missing.value.status() == "401"
    with pytest.raises(InferenceServerException) as wrong:
        client.unload_model("other", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.value.status() == "403"
    index = client.get_model_repository_index(headers=AUTH)
    assert {"name": "other", "version": "2", "state": "READY"} in index
    assert {"name": "other", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"} in index
    assert any(e["name"] == "mlp" and e["version"] == "3" and "sha256" in e.get("reason", "") for e in index)

    client.unload_model("other", headers=AUTH)
    assert not client.is_model_ready("other")
    assert {
        "name": "other",
        "version": "2",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    } in client.get_model_repository_index(headers=AUTH)
    client.load_model("other", headers=AUTH)
    assert client.is_model_ready("other") and client.is_model_ready("other", "2")
    with pytest.raises(InferenceServerException) as unknown:
        client.load_model("nope", headers=AUTH)
    assert unknown.value.status() == "404" and "model 'nope' not found" in unknown.value.message()


def test_operator_cli_promotes_lists_refuses_and_shows_history(
    swap_server: tuple[ServerProcess, dict[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, _ = swap_server
    url = ["--url", server.base_url]
    monkeypatch.delenv("HOTSERVE_ADMIN_TOKEN", raising=False)
    assert hotserve(["models", *url, "list"]) == 2
    assert "set HOTSERVE_ADMIN_TOKEN" in capsys.readouterr().err

    monkeypatch.setenv("HOTSERVE_ADMIN_TOKEN", TOKEN)
    assert hotserve(["models", *url, "promote", "other", "1"]) == 0
    out = capsys.readouterr().out
    assert "promoted other production: 2 -> 1" in out
    assert any(line.split()[:4] == ["other", "1", "READY", "production"] for line in out.splitlines())

    assert hotserve(["models", *url, "unload", "other", "1"]) == 1
    assert capsys.readouterr().err.strip() == (
        "hotserve models unload: 409: model 'other' version 1 holds production; "
        "promote another version before unloading it"
    )
    assert hotserve(["models", *url, "rollback", "other"]) == 0
    assert "rolled back other production: 1 -> 2" in capsys.readouterr().out

    assert hotserve(["models", *url, "list", "other"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["MODEL", "VERSION", "STATE", "ALIASES", "SERVING"]
    assert [row.split()[:5] for row in rows] == [
        ["other", "1", "READY", "-", "-"],
        ["other", "2", "READY", "production", "*"],
    ]

    assert hotserve(["models", *url, "history", "other"]) == 0
    history = capsys.readouterr().out.splitlines()
    assert [line.split()[1:7] for line in history[-3:]] == [
        ["ops", "promote", "production", "2", "1", "ok"],
        ["ops", "unload", "-", "1", "-", "refused"],
        ["ops", "rollback", "production", "1", "2", "ok"],
    ]

    assert hotserve(["models", "--url", "http://127.0.0.1:9", "list"]) == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


async def test_two_servers_sharing_a_control_state_file_apply_one_change(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    for version in (1, 2):
        write_model_version(root, "mlp", version)
    env = {
        "HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}",
        "HOTSERVE_CONTROL_POLL_INTERVAL_S": "0.05",
        "HOTSERVE_CONTROL_STATE_PATH": str(tmp_path / "shared" / "control.json"),
    }
    first = start_server(root, tmp_path / "first.log", ready_path="/v2/health/ready", env=env)
    second = start_server(root, tmp_path / "second.log", ready_path="/v2/health/ready", env=env)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            await admin(client, "PUT", first.base_url + "/admin/models/mlp/aliases/production", json={"version": 1})
            for _ in range(400):  # the second one polls the file every 50 ms
                view = (await admin(client, "GET", second.base_url + "/admin/models/mlp")).json()
                if view["serving"] == 1:
                    break
                await asyncio.sleep(0.05)
            assert view["serving"] == 1 and view["retained"] == 2
            answer = await client.post(second.base_url + "/v2/models/mlp/infer", json=BODY)
            assert answer.json()["model_version"] == "1"
    finally:
        assert first.stop() == 0 and second.stop() == 0


def test_operator_cli_deletes_an_alias_and_an_unload_it_blocks_names_that_command(
    swap_server: tuple[ServerProcess, dict[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, _ = swap_server
    url = ["--url", server.base_url]
    monkeypatch.setenv("HOTSERVE_ADMIN_TOKEN", TOKEN)
    assert hotserve(["models", *url, "promote", "other", "1", "--alias", "canary"]) == 0
    capsys.readouterr()
    assert hotserve(["models", *url, "unload", "other", "1"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "hotserve models unload: 409: model 'other' version 1 is named by alias 'canary'; "
        "point the alias elsewhere or delete it first",
        "delete it with: hotserve models unalias other canary",
    ]
    assert hotserve(["models", *url, "unalias", "other", "canary"]) == 0
    assert capsys.readouterr().out.startswith("deleted alias canary of other (it named v1)")
    assert hotserve(["models", *url, "unalias", "other", "production"]) == 1
    assert "the production alias cannot be deleted; promote another version" in capsys.readouterr().err
