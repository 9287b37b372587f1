"""Release records and evidence in a real Redis are signed with the fleet's key: a record or a
summary written by hand (no key), altered, or moved to another key does not verify; a record is
refused (503, reported once), a summary left out of the fleet's sum (reported once)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from server.evidence.summary import WindowSummary
from server.metrics.instruments import Metrics
from server.redis_access import RedisAccess
from server.registry.audit import FileAuditLog
from server.registry.control_signing import ControlSignatureInvalid, ControlSigner
from server.registry.refusals import RecordedRefusals
from server.release.policy import ReleasePolicy
from server.release.record import ReleaseRecord
from server.release.store import RedisReleaseStore

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("HOTSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY = b"release-signing-key-" + b"k" * 32


class Signed:
    def __init__(self, prefix: str, folder: Path) -> None:
        self.prefix = prefix
        self.metrics = Metrics()
        self.audit = FileAuditLog(folder / "audit.jsonl")
        refusals = RecordedRefusals(self.metrics, self.audit, "replica-a")
        self.store = RedisReleaseStore(RedisAccess(REDIS_URL), prefix, 2.0, ControlSigner(KEY), refusals)
        self.client = redis.Redis.from_url(REDIS_URL)

    def rejected(self, document: str) -> float | None:
        sample = self.metrics.registry.get_sample_value
        return sample("hotserve_control_document_rejected_total", {"document": document})


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[Signed]:
    opened = Signed(f"hotserve-test-{uuid.uuid4().hex[:8]}", tmp_path)
    yield opened
    await opened.store.close()
    keys = [key async for key in opened.client.scan_iter(f"{opened.prefix}:*")]
    if keys:
        await opened.client.delete(*keys)
    await opened.client.aclose()


def record(**update: object) -> ReleaseRecord:
    started = ReleaseRecord(
        id="r1", model="fraud", version=2, baseline=1, policy=ReleasePolicy(), created_by="ci", created_at=0.0
    )
    return started.model_copy(update=update)


async def test_a_signed_record_round_trips_and_one_written_without_the_key_is_refused(signed: Signed) -> None:
    stored = await signed.store.put(record(), 0)
    assert await signed.store.get("fraud") == stored
    key = signed.store.location("fraud")
    forged = record(step=9, created_by="mallory", seq=2).model_dump_json()
    await signed.client.set(key, forged)  # a bare record, as the release store wrote before signing
    for _ in range(3):
        with pytest.raises(ControlSignatureInvalid, match="release record .*: seq 2 carries no signature; not driven"):
            await signed.store.get("fraud")
    assert signed.rejected("release") == 1.0
    (entry,) = await signed.audit.read()
    assert (entry.who, entry.action, entry.model, entry.result) == ("replica:replica-a", "release", "fraud", "refused")


async def test_an_altered_or_moved_record_does_not_verify(signed: Signed) -> None:
    await signed.store.put(record(), 0)
    key = signed.store.location("fraud")
    envelope = json.loads(await signed.client.get(key))
    altered = json.loads(envelope["doc"]) | {"created_by": "mallory"}
    await signed.client.set(key, json.dumps({**envelope, "doc": json.dumps(altered)}))
    with pytest.raises(ControlSignatureInvalid, match="does not verify"):
        await signed.store.get("fraud")
    # A record signed by the fleet for another model, copied under this model's key.
    await signed.store.put(record(model="other"), 0)
    await signed.client.set(key, await signed.client.get(signed.store.location("other")))
    with pytest.raises(ControlSignatureInvalid, match="does not verify"):
        await signed.store.get("fraud")
    assert signed.rejected("release") == 2.0


async def test_forged_or_tampered_evidence_is_left_out_of_the_fleets_sum(signed: Signed) -> None:
    def bucket(slot: int, requests: int, errors: int = 0) -> tuple[int, WindowSummary]:
        summary = WindowSummary(
            model="fraud", version=2, since=slot, until=slot + 1, loads=("a1",), requests=requests, errors=errors
        )
        return slot, summary

    await signed.store.publish("replica-a", [bucket(10, 500), bucket(11, 700)], ttl_s=60)
    key = f"{signed.prefix}:release:evidence:fraud:2"
    # Written by hand without the key: made-up figures for a replica that does not exist.
    made_up = bucket(11, 100_000)[1].to_json()
    await signed.client.hset(key, "11:replica-z:z1", json.dumps(made_up))
    # A genuine summary with its figures changed (its signature kept).
    envelope = json.loads(await signed.client.hget(key, "10:replica-a:a1"))
    tampered = json.loads(envelope["doc"]) | {"errors": 400}
    await signed.client.hset(key, "10:replica-a:a1", json.dumps({**envelope, "doc": json.dumps(tampered)}))
    # A genuine summary moved to another bucket.
    await signed.client.hset(key, "12:replica-a:a1", await signed.client.hget(key, "11:replica-a:a1"))

    for _ in range(2):
        summed = await signed.store.fleet("fraud", 2, 0, 100)
        assert [(s.requests, s.errors) for s in summed] == [(700, 0)]
    assert signed.rejected("evidence") == 1.0  # one report for what the key holds, however often read
    (entry,) = await signed.audit.read()
    assert entry.action == "evidence" and entry.result == "refused" and "3 summaries left out" in (entry.detail or "")
    sample = signed.metrics.registry.get_sample_value
    assert sample("hotserve_control_document_verified", {"document": "evidence"}) == 0.0
