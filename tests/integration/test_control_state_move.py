"""Moving a repository from the file control state to Redis: an empty Redis is seeded from the
file (production stays production, audited), an existing Redis document is never overwritten, and
a file that cannot be carried over stops the start with the reason."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from load_tests.server_process import start_server
from onnx_models import write_tabular
from redis_process import start_redis
from server.errors import ControlStateUnavailable
from server.registry.audit import FileAuditLog
from server.registry.control_move import FileSeed
from server.registry.control_state import ControlSnapshot, FileControlState
from server.registry.redis_control_state import RedisControlState
from test_redis_control_state import REDIS_URL

pytestmark = pytest.mark.integration

TOKEN = "move-token-0123456789"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"hotserve-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    await client.delete(f"{name}:control")
    await client.aclose()


async def file_state(path: Path, production: int) -> ControlSnapshot:
    """A file control state whose `production` was set through its own store (revision 2)."""
    store = FileControlState(path)
    first = await store.write(ControlSnapshot().with_alias("tab", "production", 2), 0)
    return await store.write(first.with_alias("tab", "production", production), first.revision)


async def test_an_empty_redis_is_seeded_from_the_file_and_an_existing_document_never_overwritten(
    prefix: str, tmp_path: Path
) -> None:
    await file_state(tmp_path / "a" / "control.json", production=1)
    audit = FileAuditLog(tmp_path / "a" / "audit.jsonl")
    state = RedisControlState(REDIS_URL, key_prefix=prefix, seed=FileSeed(tmp_path / "a" / "control.json", audit, "a"))
    seeded = await state.read()
    assert seeded.alias("tab", "production") == 1 and seeded.revision == 3
    (entry,) = await audit.read()
    assert (entry.action, entry.who, entry.revision) == ("seed", "replica:a", 3)
    assert "revision 2" in (entry.detail or "")

    # Another replica with a file of its own (production 2) reads the fleet's document.
    await file_state(tmp_path / "b" / "control.json", production=2)
    other_audit = FileAuditLog(tmp_path / "b" / "audit.jsonl")
    other = RedisControlState(
        REDIS_URL, key_prefix=prefix, seed=FileSeed(tmp_path / "b" / "control.json", other_audit, "b")
    )
    assert await other.read() == seeded
    assert await other_audit.read() == []
    await state.close()
    await other.close()


async def test_a_file_state_that_cannot_be_carried_over_stops_the_start(prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    path.write_text('{"revision": "many"}')
    state = RedisControlState(REDIS_URL, key_prefix=prefix, seed=FileSeed(path, None, "a"))
    with pytest.raises(ControlStateUnavailable, match=r"(?s)cannot be carried over .*fix that file, or remove it"):
        await state.read()
    raw = redis.Redis.from_url(REDIS_URL)
    assert await raw.exists(f"{prefix}:control") == 0
    await raw.aclose()
    await state.close()


def test_a_server_moved_to_an_empty_redis_keeps_serving_production(tmp_path: Path) -> None:
    """Versions 1 and 2; production is 1. Restarted with HOTSERVE_REDIS_URL on a Redis holding no
    document, the server serves version 1 still (it served the newest, 2, before the seed)."""
    repository = tmp_path / "repository"
    write_tabular(repository, 1)
    write_tabular(repository, 2)
    env = {"HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}", "HOTSERVE_REPLICA_ID": "only"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}
    with start_server(repository, tmp_path / "file.log", env=env) as server:
        promoted = httpx.put(
            f"{server.base_url}/admin/models/tab/aliases/production", json={"version": 1}, headers=headers
        )
        assert promoted.status_code == 200, promoted.text
    redis_server = start_redis()
    try:
        with start_server(
            repository, tmp_path / "redis.log", env={**env, "HOTSERVE_REDIS_URL": redis_server.url(3)}
        ) as moved:
            model = httpx.get(f"{moved.base_url}/admin/models/tab", headers=headers).json()
            assert model["aliases"]["production"] == 1, model
            answer = httpx.post(f"{moved.base_url}/v2/models/tab/infer", json=body)
            assert answer.status_code == 200 and answer.json()["model_version"] == "1", answer.text
            log = moved.log()
        assert "was not in Redis: carried over the file control state" in log
        entries = [json.loads(line) for line in (repository / ".hotserve" / "audit.jsonl").read_text().splitlines()]
        assert [e["action"] for e in entries if e["action"] == "seed"] == ["seed"]
    finally:
        redis_server.stop()
