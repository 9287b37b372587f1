"""A release record forged in Redis, on a real `hotserve serve` with the fleet's signing key and a
real Redis of the test's own: whoever can write to Redis but holds neither an admin token nor the
key writes a running release past its schedule (what would promote its version with no gate
judged). The server refuses it: counted in the control document's metric (its alert fires on it),
audited by the replica, production unchanged; the audit names only the admin token that started a
release, never the name a record claims.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from load_tests.server_process import ServerProcess, start_server
from onnx_models import write_tabular
from redis_process import RedisProcess, start_redis

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0
TOKEN = "release-forgery-token-0123"
SIGNING_KEY = "release-forgery-signing-key-" + "0" * 32
RECORD_KEY = "hotserve:release:record:tab"


class Replica:
    def __init__(self, server: ServerProcess, folder: Path, client: redis.Redis) -> None:
        self.server = server
        self.folder = folder
        self.redis = client

    def admin(self, method: str, path: str, body: object = None) -> httpx.Response:
        return httpx.request(
            method,
            self.server.base_url + path,
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=HANG_GUARD_S,
        )

    def production(self) -> tuple[int, dict[str, int], Any]:
        model = self.admin("GET", "/admin/models/tab").json()
        return model["aliases"].get("production"), model["traffic"], model["shadow"]

    def rejected(self) -> float:
        text = httpx.get(self.server.base_url + "/metrics", timeout=HANG_GUARD_S).text
        match = re.search(r'^hotserve_control_document_rejected_total\{document="release"\} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    def audit(self) -> list[dict[str, Any]]:
        path = self.folder / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def poll(condition: Callable[[], bool], what: str) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < HANG_GUARD_S, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    folder = tmp_path_factory.mktemp("release-forgery")
    repository = folder / "repository"
    for version in (1, 2):
        write_tabular(repository, version)
    redis_server: RedisProcess = start_redis()
    server = start_server(
        repository,
        folder / "server.log",
        env={
            "HOTSERVE_REDIS_URL": redis_server.url(),
            "HOTSERVE_CONTROL_SIGNING_KEY": SIGNING_KEY,
            "HOTSERVE_ADMIN_TOKENS": f"ci:{TOKEN}",
            "HOTSERVE_AUDIT_LOG_PATH": str(folder / "audit.jsonl"),
            "HOTSERVE_REPLICA_ID": "replica-a",
            "HOTSERVE_RELEASE_TICK_S": "0.2",
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
        },
    )
    try:
        opened = Replica(server, folder, redis.Redis(port=redis_server.port, socket_timeout=5))
        assert opened.admin("POST", "/admin/models/tab/promote", {"version": 1}).status_code == 200
        yield opened
        opened.redis.close()
    finally:
        assert server.stop() == 0, server.log()
        redis_server.stop()


def test_a_release_record_forged_in_redis_is_refused_and_production_stays(replica: Replica) -> None:
    client = replica.redis
    forged = {
        "id": "forged",
        "model": "tab",
        "version": 2,
        "baseline": 1,
        "policy": {},
        "created_by": "mallory",
        "created_at": time.time(),
        "state": "running",
        "step": 9,  # past the schedule: the driver's next move would be the promotion
        "seq": 1,
    }
    client.set(RECORD_KEY, json.dumps(forged))
    client.sadd("hotserve:release:models", "tab")
    try:
        # Refused, or (what a replica that trusts it does on its next tick) promoted.
        poll(lambda: replica.rejected() >= 1.0 or replica.production()[0] != 1, "the forged record was acted on")
        assert replica.production() == (1, {}, None)
        assert replica.rejected() == 1.0
        refused = [e for e in replica.audit() if e["action"] == "release" and e["result"] == "refused"]
        assert [e["who"] for e in refused] == ["replica:replica-a"]
        assert RECORD_KEY in refused[0]["detail"] and "carries no signature" in refused[0]["detail"]
        assert "mallory" not in {e["who"] for e in replica.audit()}
        shown = replica.admin("GET", "/admin/models/tab/releases/current")
        assert shown.status_code == 503 and "DEL the key" in shown.json()["error"]
        started = replica.admin("POST", "/admin/models/tab/releases", {"version": 2})
        assert started.status_code == 503  # nothing is built on a record that does not verify
        assert re.search(
            r"release record hotserve:release:record:tab: seq 1 carries no signature", replica.server.log()
        )
    finally:
        client.delete(RECORD_KEY)


def test_the_audit_names_the_admin_token_that_started_the_release(replica: Replica) -> None:
    policy = {"shadow_bake_s": 3600, "deadline_s": 7200}
    started = replica.admin("POST", "/admin/models/tab/releases", {"version": 2, "policy": policy})
    assert started.status_code == 201, started.text
    release = started.json()["id"]

    def entries() -> list[dict[str, Any]]:
        mine = [e for e in replica.audit() if e["action"] == "release" and e["result"] != "refused"]
        return [e for e in mine if json.loads(e["detail"])["release"] == release]

    poll(lambda: any(json.loads(e["detail"])["event"] == "step" for e in entries()), "the shadow step is applied")
    assert replica.admin("POST", "/admin/models/tab/releases/current/abort").status_code == 200
    poll(lambda: any(json.loads(e["detail"])["event"] == "verdict" for e in entries()), "the abort is carried out")
    events = [(json.loads(e["detail"])["event"], e["who"]) for e in entries()]
    assert events == [("started", "ci"), ("step", "ci"), ("abort_requested", "ci"), ("verdict", "ci")]
    assert replica.production() == (1, {}, None)
