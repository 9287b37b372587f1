"""One routing for a fleet: real `hotserve serve` replicas sharing one real Redis for their control state.

Each test owns a redis-server on a free port (append-only file in its tmp dir, so a restart keeps
the routing), stopped and restarted by its PID. Load runs against every replica throughout and
every answer is checked: zero failures, each from a version the routing allowed.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from load_tests.server_process import ServerProcess, free_port, start_server
from onnx_models import write_tabular
from server.registry.control_state import ControlSnapshot
from server.registry.redis_control_state import RedisControlState

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30.0
BODY = orjson.dumps(
    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}
)


@dataclass
class RedisServer:
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + HANG_GUARD_S
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=HANG_GUARD_S)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    for version in (1, 2):
        write_tabular(root, version)
    return root


TOKEN = "fleet-operator-token-0123"


def start_replica(repository: Path, redis: RedisServer, log: Path, reconcile_s: float = 1.0) -> ServerProcess:
    return start_server(
        repository,
        log,
        env={
            "HOTSERVE_REDIS_URL": redis.url,
            "HOTSERVE_CONTROL_RECONCILE_INTERVAL_S": str(reconcile_s),
            "HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}",
            "HOTSERVE_CONTROL_REDIS_TIMEOUT_MS": "200",
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
        },
    )


def applied_revision(server: ServerProcess) -> int:
    text = httpx.get(server.base_url + "/metrics", timeout=5).text
    match = re.search(r"^hotserve_control_revision (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else -1


def wait_applied(servers: list[ServerProcess], revision: int) -> float:
    """Seconds until every replica applied `revision` (polled)."""
    started = time.monotonic()
    while not all(applied_revision(s) >= revision for s in servers):
        assert time.monotonic() - started < HANG_GUARD_S, [applied_revision(s) for s in servers]
        time.sleep(0.01)
    return time.monotonic() - started


@dataclass
class Load:
    """Clients sending to every replica in turn until stopped; every answer recorded."""

    servers: list[ServerProcess]
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, index: int, limit: int | None) -> None:
        async with httpx.AsyncClient(timeout=HANG_GUARD_S) as http:
            while not self._stop.is_set() and (limit is None or self.sent < limit):
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

    async def run(self, clients: int, limit: int | None = None) -> None:
        await asyncio.gather(*(self.client(i, limit) for i in range(clients)))

    def stop(self) -> None:
        self._stop.set()


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` while the load runs; fail after HANG_GUARD_S."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def control_up(server: ServerProcess) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=5).text
    match = re.search(r"^hotserve_control_state_up (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


async def admin(replica: ServerProcess, method: str, path: str, body: object = None) -> dict[str, object]:
    """An operator's admin call through one replica; returns the answer's JSON (200 asserted)."""
    async with httpx.AsyncClient(timeout=HANG_GUARD_S) as http:
        response = await http.request(
            method, replica.base_url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 200, response.text
    doc: dict[str, object] = response.json()
    return doc


def revision_of(doc: dict[str, object]) -> int:
    change = doc["change"]
    assert isinstance(change, dict)
    return int(change["revision"])


async def test_a_canary_split_reaches_every_replica_and_a_late_one_starts_with_it(
    repository: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    operator = RedisControlState(redis_server.url)
    await operator.write(ControlSnapshot().with_alias("tab", "production", 1), expected_revision=0)
    replicas = [start_replica(repository, redis_server, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        # The canary and its 90/10 split are set through replica 0's admin API only.
        await admin(replicas[0], "PUT", "/admin/models/tab/aliases/canary", {"version": 2})
        started = time.monotonic()
        revision = revision_of(
            await admin(replicas[0], "PUT", "/admin/models/tab/traffic", {"weights": {"production": 90, "canary": 10}})
        )
        convergence_s = wait_applied(replicas, revision) + (time.monotonic() - started)
        # Converged (pub/sub, or the reconcile as a fallback); how fast is the machine's, and the
        # release benchmark's to measure.
        print(f"canary 90/10 applied by both replicas in {convergence_s * 1000:.0f} ms")

        load = Load(replicas)
        await load.run(clients=8, limit=2000)
        assert load.failures == []
        share = load.versions["2"] / sum(load.versions.values())
        print(f"canary share over {sum(load.versions.values())} requests: {share:.3f}")
        assert abs(share - 0.10) <= 0.03

        late = start_replica(repository, redis_server, tmp_path / "late.log")
        replicas.append(late)
        assert applied_revision(late) == revision  # ready only once it has the routing
        reports = await admin(late, "GET", "/admin/replicas")
        assert len(reports["replicas"]) == 3  # type: ignore[arg-type]

        # Promote, then roll back, through the shared state while traffic flows: no failures.
        load = Load(replicas)
        traffic = asyncio.ensure_future(load.run(clients=8))
        await admin(replicas[1], "DELETE", "/admin/models/tab/traffic")
        revision = revision_of(await admin(replicas[1], "POST", "/admin/models/tab/promote", {"version": 2}))
        await asyncio.to_thread(wait_applied, replicas, revision)
        before = load.versions["2"]
        await until(lambda: load.versions["2"] >= before + 50)
        revision = revision_of(await admin(late, "POST", "/admin/models/tab/rollback"))
        await asyncio.to_thread(wait_applied, replicas, revision)
        after_rollback = load.versions["1"]
        await until(lambda: load.versions["1"] >= after_rollback + 50)
        load.stop()
        await asyncio.wait_for(traffic, HANG_GUARD_S)
        assert load.failures == [] and load.versions["1"] and load.versions["2"]
    finally:
        for replica in replicas:
            assert replica.stop() == 0, replica.log()
        await operator.close()


async def test_replicas_keep_the_last_routing_while_redis_is_down_and_converge_after(
    repository: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    operator = RedisControlState(redis_server.url)
    await operator.write(ControlSnapshot().with_alias("tab", "production", 2), expected_revision=0)
    replicas = [start_replica(repository, redis_server, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        load = Load(replicas)
        traffic = asyncio.ensure_future(load.run(clients=8))
        redis_server.stop()
        sent_when_stopped = load.sent
        await until(lambda: load.sent >= sent_when_stopped + 300)  # the last routing, Redis gone
        for replica in replicas:  # each replica noticed, and says so
            await asyncio.to_thread(lambda r=replica: asyncio.run(until(lambda: control_up(r) == 0.0)))
        assert load.failures == [] and set(load.versions) == {"2"}

        redis_server.start()  # the append-only file brings the routing back
        revision = revision_of(await admin(replicas[0], "POST", "/admin/models/tab/promote", {"version": 1}))
        await asyncio.to_thread(wait_applied, replicas, revision)
        after = load.versions["1"]
        await until(lambda: load.versions["1"] >= after + 50)
        load.stop()
        await asyncio.wait_for(traffic, HANG_GUARD_S)
        assert load.failures == []
        for replica in replicas:
            assert control_up(replica) == 1.0
    finally:
        for replica in replicas:
            assert replica.stop() == 0, replica.log()
        await operator.close()


async def listed_replicas(replica: ServerProcess) -> list[dict[str, object]]:
    listed = (await admin(replica, "GET", "/admin/replicas"))["replicas"]
    assert isinstance(listed, list)
    return listed


async def test_a_cleanly_stopped_replica_leaves_the_replica_list_at_once(
    repository: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Reports go stale after three reconcile periods (90 s here): only a withdrawal explains
    # a stopped replica leaving the list before that.
    replicas = [start_replica(repository, redis_server, tmp_path / f"replica{i}.log", reconcile_s=30) for i in (0, 1)]
    stopped = False
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while len(await listed_replicas(replicas[0])) < 2:  # each reports once it applied the routing
            assert time.monotonic() < deadline, "the second replica never reported"
            await asyncio.sleep(0.05)  # polling interval
        assert replicas[1].stop() == 0, replicas[1].log()
        stopped = True
        listed = await listed_replicas(replicas[0])
        assert len(listed) == 1, listed
        operator = RedisControlState(redis_server.url)
        try:
            assert [r.replica for r in await operator.replicas()] == [listed[0]["replica"]]
        finally:
            await operator.close()
    finally:
        for replica in replicas[: 1 if stopped else 2]:
            assert replica.stop() == 0, replica.log()
