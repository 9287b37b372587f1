"""The control document of a fleet of real `hotserve serve` replicas on a real Redis of the test's own:
a forged revision is refused (and the alert fires on the exported series), and a lost document
(Redis flushed, then restarted empty) is written back by one replica while traffic keeps flowing.

Production is pinned to version 1 of two, so a replica that fell back to "latest" would answer 2.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import yaml

from load_tests.server_process import ServerProcess, start_server
from onnx_models import write_tabular
from redis_process import RedisProcess, start_redis
from server.registry.control_state import ControlSnapshot
from tests.deploy.conftest import find_tool, run
from tests.deploy.monitoring_files import RULE_FILES

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0
TOKEN = "fleet-control-token-0123"
SIGNING_KEY = "fleet-signing-key-" + "0" * 32
DOC_KEY = "hotserve:control"
BODY = orjson.dumps(
    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}
)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = start_redis()  # no persistence: a restart comes back empty
    yield server
    server.stop()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    for version in (1, 2):
        write_tabular(root, version)
    return root


def start_replica(repository: Path, redis_server: RedisProcess, folder: Path, name: str) -> ServerProcess:
    (folder / name).mkdir(parents=True, exist_ok=True)
    return start_server(
        repository,
        folder / name / "server.log",
        env={
            "HOTSERVE_REDIS_URL": redis_server.url(),
            "HOTSERVE_CONTROL_SIGNING_KEY": SIGNING_KEY,
            "HOTSERVE_CONTROL_RECONCILE_INTERVAL_S": "1",
            "HOTSERVE_CONTROL_REDIS_TIMEOUT_MS": "200",
            "HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}",
            "HOTSERVE_AUDIT_LOG_PATH": str(folder / name / "audit.jsonl"),
            "HOTSERVE_REPLICA_ID": name,
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
        },
    )


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


def admin(server: ServerProcess, method: str, path: str, body: object = None) -> dict[str, Any]:
    response = httpx.request(
        method, server.base_url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=HANG_GUARD_S
    )
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def poll(condition: Callable[[], bool], what: str) -> float:
    """Seconds until `condition` held (polled); fails after HANG_GUARD_S."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < HANG_GUARD_S, what
        time.sleep(0.02)
    return time.monotonic() - started


def stored_revision(client: redis.Redis) -> int:
    raw = client.hget(DOC_KEY, "revision")
    return int(raw) if raw is not None else 0


@dataclass
class Load:
    """A bounded number of clients sending to every replica in turn until stopped."""

    servers: list[ServerProcess]
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, index: int) -> None:
        async with httpx.AsyncClient(timeout=HANG_GUARD_S) as http:
            while not self._stop.is_set():
                server = self.servers[(index + self.sent) % len(self.servers)]
                self.sent += 1
                try:
                    response = await http.post(server.base_url + "/v2/models/tab/infer", content=BODY)
                except httpx.HTTPError as error:
                    self.failures.append(f"{server.base_url}: {error!r}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{server.base_url}: {response.status_code} {response.text}")
                else:
                    self.versions[response.json()["model_version"]] += 1

    async def run(self, clients: int) -> None:
        await asyncio.gather(*(self.client(i) for i in range(clients)))

    def stop(self) -> None:
        self._stop.set()


async def until(condition: Callable[[], bool], what: str) -> float:
    return await asyncio.to_thread(poll, condition, what)


async def test_a_lost_control_document_is_written_back_and_no_replica_invents_a_routing(
    repository: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    replicas = [start_replica(repository, redis_server, tmp_path, f"replica{i}") for i in range(2)]
    client = redis.Redis(port=redis_server.port, socket_timeout=5)
    try:
        pinned = admin(replicas[0], "PUT", "/admin/models/tab/aliases/production", {"version": 1})
        poll(lambda: all(metric(r, "hotserve_control_revision") >= pinned["change"]["revision"] for r in replicas), "")
        load = Load(replicas)
        traffic = asyncio.ensure_future(load.run(clients=4))
        await until(lambda: load.sent >= 200, "load started")

        restorations = []
        for loss in ("flushall", "restart empty"):
            before = stored_revision(client)
            if loss == "flushall":
                client.flushall()
            else:
                redis_server.stop()
                sent = load.sent
                await until(lambda s=sent: load.sent >= s + 200, "traffic while Redis is down")
                redis_server.start()  # same port, no persistence: empty
            seconds = await until(lambda b=before: stored_revision(client) > b, f"document restored after {loss}")
            restorations.append(seconds)
            restored = stored_revision(client)
            await until(
                lambda r=restored: all(metric(x, "hotserve_control_revision") == r for x in replicas),
                "both replicas applied the restored revision",
            )
            print(f"{loss}: document restored as revision {restored} {seconds:.2f} s after the loss")
            doc = ControlSnapshot.model_validate_json(client.hget(DOC_KEY, "doc") or b"")
            assert doc.alias("tab", "production") == 1
            assert client.hget(DOC_KEY, "sig")  # written back signed

        late = start_replica(repository, redis_server, tmp_path, "late")
        replicas.append(late)
        assert metric(late, "hotserve_control_revision") == stored_revision(client)  # adopted, not invented
        load.servers = replicas
        sent = load.sent
        await until(lambda: load.sent >= sent + 300, "traffic on three replicas")
        load.stop()
        await asyncio.wait_for(traffic, HANG_GUARD_S)

        assert load.failures == []
        assert set(load.versions) == {"1"}, load.versions  # nobody fell back to "latest" (2)
        audit = [
            entry
            for replica in replicas
            for entry in admin(replica, "GET", "/admin/audit")["entries"]
            if entry["action"] == "restore"
        ]
        assert len(audit) == 2, audit  # one write-back per loss, by one replica
        assert all(entry["who"].startswith("replica:replica") and entry["result"] == "ok" for entry in audit)
        assert sum(metric(r, "hotserve_control_document_restored_total") for r in replicas) == 2
    finally:
        for replica in replicas:
            assert replica.stop() == 0, replica.log()
        client.close()


async def test_a_forged_revision_is_refused_keeps_the_routing_and_fires_the_alert(
    repository: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    replica = start_replica(repository, redis_server, tmp_path, "replica0")
    client = redis.Redis(port=redis_server.port, socket_timeout=5)
    try:
        pinned = admin(replica, "PUT", "/admin/models/tab/aliases/production", {"version": 1})["change"]["revision"]
        exported_before = _control_document_series(replica)
        stored = ControlSnapshot.model_validate_json(client.hget(DOC_KEY, "doc") or b"")
        forged = stored.with_alias("tab", "production", 2).model_copy(update={"revision": pinned + 1})
        # Anyone with Redis access but neither token nor key: a document without a valid signature.
        client.hset(DOC_KEY, mapping={"doc": forged.model_dump_json(), "revision": forged.revision, "sig": "0" * 64})
        client.publish(f"{DOC_KEY}:changes", forged.revision)

        poll(
            lambda: metric(replica, 'hotserve_control_document_verified{document="control"}') == 0.0,
            "the refusal is exported",
        )
        assert metric(replica, 'hotserve_control_document_rejected_total{document="control"}') == 1.0
        assert metric(replica, "hotserve_control_revision") == pinned
        answer = httpx.post(replica.base_url + "/v2/models/tab/infer", content=BODY, timeout=HANG_GUARD_S)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        assert re.search(
            rf"revision {forged.revision} has a signature that does not verify .*keeping the last good routing",
            replica.log(),
        )
        _alert_fires_on(exported_before, _control_document_series(replica), tmp_path)
        audit = [orjson.loads(line) for line in (tmp_path / "replica0" / "audit.jsonl").read_text().splitlines()]
        refused = [e for e in audit if e["result"] == "refused"]
        assert [(e["who"], e["action"], e["revision"]) for e in refused] == [
            ("replica:replica0", "control", forged.revision)
        ]  # audited once, however often the replica reads it
        assert "does not verify" in refused[0]["detail"]

        refused = httpx.put(
            replica.base_url + "/admin/models/tab/aliases/canary",
            json={"version": 2},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=HANG_GUARD_S,
        )
        assert refused.status_code == 503 and "does not verify" in refused.json()["error"]
        client.delete(DOC_KEY)  # the remedy: the replica writes its last good routing back, signed
        poll(
            lambda: metric(replica, 'hotserve_control_document_verified{document="control"}') == 1.0,
            "the document is written back",
        )
        restored = ControlSnapshot.model_validate_json(client.hget(DOC_KEY, "doc") or b"")
        assert restored.alias("tab", "production") == 1 and restored.revision == pinned + 1
    finally:
        assert replica.stop() == 0, replica.log()
        client.close()


def _control_document_series(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    found = re.findall(
        r'^(hotserve_control_document_(?:verified|rejected_total))\{document="control"\} (\S+)$', text, re.M
    )
    return {name: float(value) for name, value in found}


def _alert_fires_on(before: dict[str, float], after: dict[str, float], folder: Path) -> None:
    """`promtool test rules`: the scraped series (before, then after the forgery, as one pod's)
    fire HotserveControlDocumentRejected, and the series before it alone do not."""
    labels = {"namespace": "serving", "job": "rel-hotserve", "pod": "replica0"}
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    rule = next(
        r
        for group in yaml.safe_load(RULE_FILES[0].read_text())["groups"]
        for r in group["rules"]
        if r.get("alert") == "HotserveControlDocumentRejected"
    )
    annotations = {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], " ".join(text.split()))
        for key, text in rule["annotations"].items()
    }
    tests = {
        "rule_files": [str(path) for path in RULE_FILES],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'{name}{{{selector},document="control"}}',
                        "values": f"{before[name]}x5 {after[name]}x10",
                    }
                    for name in sorted(after)
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "HotserveControlDocumentRejected", "exp_alerts": []},
                    {
                        "eval_time": "7m",
                        "alertname": "HotserveControlDocumentRejected",
                        "exp_alerts": [
                            {"exp_labels": {**labels, "severity": "critical"}, "exp_annotations": annotations}
                        ],
                    },
                ],
            }
        ],
    }
    test_file = folder / "control_document_alert_test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = run([find_tool("promtool"), "test", "rules", str(test_file)])
    assert "SUCCESS" in result.stdout
