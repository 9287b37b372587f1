"""The control document in a real Redis: signed, refused when it does not verify, restored when lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from server.errors import ControlStateUnavailable
from server.registry.control_signing import ControlSignatureInvalid, ControlSigner
from server.registry.control_state import ControlSnapshot, ReplicaStatus
from server.registry.redis_control_state import RedisControlState

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("HOTSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
HANG_GUARD_S = 20
KEY = b"k" * 32


class Events:
    """What the store reported, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def up(self, up: bool) -> None:
        self.seen.append(f"up={up}")

    def verified(self) -> None:
        if not self.seen or self.seen[-1] != "verified":
            self.seen.append("verified")

    async def rejected(self, revision: int | None, reason: str, print_: str) -> None:
        self.seen.append(f"rejected {revision}")

    async def restored(self, restored: ControlSnapshot, from_revision: int) -> None:
        self.seen.append(f"restored {from_revision}->{restored.revision}")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"hotserve-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    await client.delete(f"{name}:control", f"{name}:control:replicas")
    await client.aclose()


def store(prefix: str, events: Events | None = None, key: bytes | None = KEY, **kwargs: float) -> RedisControlState:
    return RedisControlState(
        REDIS_URL, key_prefix=prefix, signer=ControlSigner(key), events=events, reconcile_interval_s=30, **kwargs
    )


async def forge(prefix: str, snapshot: ControlSnapshot, signature: str | None) -> None:
    """Write the document by hand, as anyone with Redis access but no key could."""
    client = redis.Redis.from_url(REDIS_URL)
    mapping = {"doc": snapshot.model_dump_json(), "revision": snapshot.revision}
    if signature is not None:
        mapping["sig"] = signature
    await client.hset(f"{prefix}:control", mapping=mapping)  # type: ignore[arg-type]
    await client.publish(f"{prefix}:control:changes", snapshot.revision)
    await client.aclose()


@pytest.mark.parametrize("signature", [None, "", "0" * 64], ids=["missing", "empty", "wrong"])
async def test_a_document_written_by_hand_without_the_key_is_never_applied(prefix: str, signature: str | None) -> None:
    events = Events()
    writer, replica = store(prefix), store(prefix, events)
    good = await writer.write(ControlSnapshot().with_alias("m", "production", 1), expected_revision=0)
    changes = replica.watch(after_revision=0)
    assert await asyncio.wait_for(anext(changes), HANG_GUARD_S) == good
    next_change = asyncio.ensure_future(anext(changes))

    await forge(prefix, good.with_alias("m", "production", 9).model_copy(update={"revision": 2}), signature)
    with pytest.raises(ControlSignatureInvalid, match="revision 2 .* not applied, keeping the last good routing"):
        await replica.read()
    with pytest.raises(ControlSignatureInvalid):
        await replica.read()
    assert events.seen == ["verified", "rejected 2"]  # refused once, however often it is read

    fixed = await writer.write(good.with_alias("m", "production", 2), expected_revision=2)
    # The watcher yields in order: the forged revision 2 was never yielded before the signed 3.
    assert await asyncio.wait_for(next_change, HANG_GUARD_S) == fixed
    assert events.seen[-1] == "verified"
    await changes.aclose()
    await writer.close()
    await replica.close()


async def test_a_document_signed_with_another_key_or_for_another_fleet_does_not_verify(prefix: str) -> None:
    other_fleet = f"{prefix}-other"
    await store(prefix, key=b"x" * 32).write(ControlSnapshot().with_alias("m", "production", 1), 0)
    with pytest.raises(ControlSignatureInvalid, match="does not verify"):
        await store(prefix).read()
    signed = store(other_fleet)
    await signed.write(ControlSnapshot().with_alias("m", "production", 1), 0)
    client = redis.Redis.from_url(REDIS_URL)
    doc, sig = await client.hmget(f"{other_fleet}:control", ["doc", "sig"])
    await client.delete(f"{other_fleet}:control")
    await client.aclose()
    await forge(prefix, ControlSnapshot.model_validate_json(doc), sig.decode())  # replayed under our key
    with pytest.raises(ControlSignatureInvalid, match="does not verify"):
        await store(prefix).read()


async def test_a_lost_document_is_written_back_once_and_every_replica_adopts_it(prefix: str) -> None:
    events_a, events_b = Events(), Events()
    a, b = store(prefix, events_a), store(prefix, events_b)
    await a.write(ControlSnapshot().with_alias("m", "production", 1), 0)
    stored = await a.write((await a.read()).with_alias("m", "canary", 2), 1)
    assert await b.read() == stored
    client = redis.Redis.from_url(REDIS_URL)
    await client.delete(f"{prefix}:control")  # as FLUSHDB or a restart without persistence would

    restored_a, restored_b = await asyncio.gather(a.read(), b.read())
    assert restored_a == restored_b
    assert restored_a.revision == 3 and restored_a.models == stored.models
    restorations = [e for e in events_a.seen + events_b.seen if e.startswith("restored")]
    assert restorations == ["restored 2->3"]  # one replica wrote it back
    assert (await client.hget(f"{prefix}:control", "sig")) not in (None, b"")  # signed
    await client.aclose()
    await a.close()
    await b.close()


async def test_a_replica_that_lagged_never_wins_a_restoration_with_an_older_routing(prefix: str) -> None:
    ahead, behind = store(prefix), store(prefix)
    await ahead.write(ControlSnapshot().with_alias("m", "production", 1), 0)
    assert (await behind.read()).revision == 1  # behind stops reading here
    newest = await ahead.write((await ahead.read()).with_alias("m", "production", 2), 1)
    client = redis.Redis.from_url(REDIS_URL)
    await client.delete(f"{prefix}:control")
    await client.aclose()

    assert (await behind.read()).alias("m", "production") == 1  # it restores first: revision 2
    adopted = await ahead.read()  # ahead finds revision 2 with an older routing than its own
    assert adopted.revision == 3 and adopted.models == newest.models
    assert await behind.read() == adopted


async def test_a_replica_starting_after_the_loss_waits_for_the_live_ones_instead_of_inventing(prefix: str) -> None:
    live = store(prefix)
    await live.write(ControlSnapshot().with_alias("m", "production", 1), 0)
    await live.report(ReplicaStatus(replica="live", revision=1, reported_at=time.time()))
    client = redis.Redis.from_url(REDIS_URL)
    listener = client.pubsub()  # the live replica's subscription to the change feed
    await listener.subscribe(live.presence_channel)
    await client.delete(f"{prefix}:control")  # lost; the live replica has not noticed yet

    newcomer = store(prefix)
    with pytest.raises(ControlStateUnavailable, match="missing from Redis while other replicas are live"):
        await newcomer.read()
    restored = await live.read()  # its next reconcile notices the loss and writes its routing back
    assert restored.revision == 2 and restored.alias("m", "production") == 1
    assert await newcomer.read() == restored
    await listener.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()


async def test_a_fleet_that_never_stored_a_document_starts_from_the_empty_routing(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    elsewhere = client.pubsub()  # replicas of the same prefix in another database of this Redis
    await elsewhere.subscribe(f"{prefix}:control:changes", f"{prefix}:control:changes:db999")
    assert await store(prefix).read() == ControlSnapshot()
    await elsewhere.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()


async def test_hotserve_control_sign_vouches_for_an_unsigned_document_only_when_told(prefix: str) -> None:
    await store(prefix, key=None).write(ControlSnapshot().with_alias("m", "production", 3), 0)  # an unsigned fleet
    with pytest.raises(ControlSignatureInvalid, match="carries no signature"):
        await store(prefix).read()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_")},
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "HOTSERVE_REDIS_URL": REDIS_URL,
        "HOTSERVE_CONTROL_KEY_PREFIX": prefix,
        "HOTSERVE_CONTROL_SIGNING_KEY": KEY.decode(),
    }
    command = [sys.executable, "-m", "server.cli", "control", "sign"]
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 1 and "m: aliases {'production': 3}" in shown.stdout
    with pytest.raises(ControlSignatureInvalid):
        await store(prefix).read()  # nothing written without --yes
    signed = subprocess.run([*command, "--yes"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert signed.returncode == 0, signed.stderr
    verified = await store(prefix).read()
    assert verified.revision == 2 and verified.alias("m", "production") == 3
    del env["HOTSERVE_CONTROL_SIGNING_KEY"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "needs HOTSERVE_REDIS_URL and HOTSERVE_CONTROL_SIGNING_KEY" in refused.stderr
