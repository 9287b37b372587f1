"""The control snapshot in Redis: one routing for every replica of the fleet (control path).

One hash holds the whole snapshot (`doc`, JSON) and its `revision`. A write is a
compare-and-set done inside Redis by one Lua script (read the revision, compare, store,
publish), so two replicas or two operators can never both win the same revision. Every change
is published on a channel; `watch()` listens to it and also re-reads the document every
`reconcile_interval_s` as a safety net for a missed message (pub/sub is fire-and-forget).

When Redis is unreachable, `watch()` keeps retrying with a bounded backoff and yields nothing:
the registry keeps serving the last routing it applied (it never falls back to "latest"), and
`up` (exported as `hotserve_control_state_up`) says so. Once Redis answers again the next read
catches up. Redis errors become `ControlStateUnavailable` here; nothing above imports redis.

Signed documents (`control_signing.py`): the hash also holds `sig`, the HMAC of `doc`; a document
that does not verify is refused like an invalid one (never applied; counted, logged and audited
once, through the events).

A lost document (Redis restarted without persistence, or flushed) is never read as "no routing":
a replica that has seen a document writes its last one back as the next revision (only if the
key is still absent, so one replica wins; audited as `restore`), and every replica adopts that.
A replica starting with no document of its own while other replicas are live waits for them to
write it back rather than inventing a routing; only a fleet that never stored one starts from a
routing of its own: the file control state the repository used before Redis, if any (seeded,
never over an existing document: `control_move.py`), else the empty one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import redis.asyncio as redis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.errors import ControlConflict, ControlStateUnavailable
from server.redis_access import RedisAccess
from server.registry.control_events import ControlEvents
from server.registry.control_move import ControlSeed
from server.registry.control_signing import ControlSignatureInvalid, ControlSigner
from server.registry.control_state import ControlSnapshot, ReplicaStatus
from server.registry.refusals import fingerprint

log = logging.getLogger(__name__)

# KEYS[1] = hash, KEYS[2] = channel; an absent document has revision 0 (stored ones start at 1).
# ARGV[1] = expected revision, ARGV[2] = new doc, ARGV[3] = new revision, ARGV[4] = signature
_COMPARE_AND_SET = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if stored ~= tonumber(ARGV[1]) then
  return stored
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'revision', ARGV[3], 'sig', ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return -1
"""

MAX_BACKOFF_S = 2.0


class RedisControlState:
    """The `ControlSnapshot` as one Redis hash with a revision, changes published on a channel."""

    def __init__(
        self,
        url: str | RedisAccess,
        key_prefix: str = "hotserve",
        timeout_s: float = 0.5,
        reconcile_interval_s: float = 5.0,
        on_up_change: Callable[[bool], None] | None = None,
        signer: ControlSigner | None = None,
        events: ControlEvents | None = None,
        seed: ControlSeed | None = None,
    ) -> None:
        self.key = f"{key_prefix}:control"
        self.channel = f"{key_prefix}:control:changes"
        self.replicas_key = f"{key_prefix}:control:replicas"
        self.reconcile_interval_s = reconcile_interval_s
        self._signer = signer or ControlSigner()
        self._events = events
        self._seed_from = seed
        """What a fleet that never stored a document starts from (`control_move.py`)."""
        self._last_good: ControlSnapshot | None = None
        """The newest document read or written here: what a lost document is restored from."""
        self._rejected: tuple[bytes, str] | None = None
        self._missing_since: float | None = None
        self._subscribed = False
        access = url if isinstance(url, RedisAccess) else RedisAccess(url)
        # One retry on a dropped connection: a pooled connection goes stale when Redis restarts.
        self._client: redis.Redis = redis.Redis.from_url(
            access.url,
            **access.client_options(),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._cas = self._client.register_script(_COMPARE_AND_SET)
        # Pub/sub channels span every database of a Redis: the presence channel names this one,
        # so only replicas sharing this document count as live ones.
        db = self._client.connection_pool.connection_kwargs.get("db", 0)
        self.presence_channel = f"{self.channel}:db{db}"
        self._on_up_change = on_up_change
        self.up = True
        """False while Redis does not answer (the last routing applied keeps serving)."""

    def _mark(self, up: bool, error: BaseException | None = None) -> None:
        if up != self.up:
            self.up = up
            if up:
                log.warning("control state: Redis answers again at %s", self.key)
            else:
                log.error("control state: Redis unreachable (%s); serving the last routing applied", error)
            if self._on_up_change is not None:
                self._on_up_change(up)
            if self._events is not None:
                self._events.up(up)

    async def read(self) -> ControlSnapshot:
        """The stored document, verified; a lost one is written back first (see the module doc).

        ControlSignatureInvalid (a ControlStateUnavailable) for a document that does not verify,
        ValueError for an invalid one, ControlStateUnavailable while Redis does not answer or
        while a lost document waits for the replica that will write it back."""
        try:
            doc, signature = await self._client.hmget(self.key, ["doc", "sig"])
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"control state in Redis cannot be read: {error}") from error
        self._mark(True)
        if doc is None:
            return await self._missing()
        self._missing_since = None
        snapshot = await self._verified(_bytes(doc), None if signature is None else _bytes(signature))
        last = self._last_good
        if last is not None and snapshot.revision <= last.revision and snapshot.models != last.models:
            # Gone backwards (written back by a replica that lagged, or an old backup loaded):
            # this replica's routing is newer, and replicas never apply an older revision.
            return await self._write_back(last, snapshot.revision)
        if snapshot.revision > 0:
            self._last_good = snapshot
        return snapshot

    async def _verified(self, doc: bytes, signature: bytes | None) -> ControlSnapshot:
        sig = signature.decode(errors="replace") if signature is not None else None
        problem = self._signer.check(self.key, doc, sig)
        if problem is not None:
            revision = _revision_of(doc)
            refusal = ControlSignatureInvalid(self.key, revision, problem)
            if self._rejected != (doc, sig or ""):  # each refused document is reported once
                self._rejected = (doc, sig or "")
                if self._events is not None:
                    await self._events.rejected(revision, refusal.message, fingerprint(doc, sig))
                else:
                    log.error("%s", refusal)
            raise refusal
        try:
            snapshot = ControlSnapshot.model_validate_json(doc)
        except ValidationError as error:
            # Refuse to guess, as the file store does.
            raise ValueError(f"control state {self.key} in Redis is invalid: {error}") from error
        self._rejected = None
        if self._events is not None:
            self._events.verified()
        return snapshot

    async def write(self, snapshot: ControlSnapshot, expected_revision: int) -> ControlSnapshot:
        stored = snapshot.model_copy(update={"revision": expected_revision + 1})
        doc = stored.model_dump_json()
        try:
            result = await self._cas(
                keys=[self.key, self.channel],
                args=[expected_revision, doc, stored.revision, self._signer.sign(self.key, doc.encode())],
            )
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"control state in Redis cannot be written: {error}") from error
        self._mark(True)
        if int(result) != -1:
            raise ControlConflict(expected_revision, int(result))
        self._stored_ours(stored)
        return stored

    def _stored_ours(self, stored: ControlSnapshot) -> None:
        """What Redis holds now is a document this replica signed."""
        self._last_good = stored
        self._rejected = None
        if self._events is not None:
            self._events.verified()

    async def _missing(self) -> ControlSnapshot:
        """No document in Redis: write ours back, wait for a live replica to write its back, or
        (a fleet that never stored one) carry over the file state's (`_seed`)."""
        last = self._last_good
        if last is not None:
            return await self._write_back(last, observed_revision=0)
        try:
            waiting = await self._others_may_restore()
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"control state in Redis cannot be read: {error}") from error
        if waiting:
            raise ControlStateUnavailable(
                f"control state {self.key} is missing from Redis while other replicas are live; "
                "waiting for one of them to write their routing back (a replica never invents one)"
            )
        return await self._seed()

    async def _seed(self) -> ControlSnapshot:
        """The routing a fleet that never stored a document starts from: the file state this
        repository used before Redis, stored only if the key is still absent (another replica's
        document is read instead, never overwritten); the empty routing when there is none."""
        seed = self._seed_from
        try:
            snapshot = None if seed is None else await seed.read()
        except (ValueError, ControlStateUnavailable) as error:
            assert seed is not None
            raise ControlStateUnavailable(
                f"control state {self.key} is not in Redis yet and {seed.source} cannot be carried over "
                f"({error}); fix that file, or remove it to start with no routing"
            ) from error
        if seed is None or snapshot is None:
            return ControlSnapshot()
        stored = snapshot.model_copy(update={"revision": snapshot.revision + 1})
        doc = stored.model_dump_json()
        try:
            result = await self._cas(
                keys=[self.key, self.channel],
                args=[0, doc, stored.revision, self._signer.sign(self.key, doc.encode())],
            )
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"control state in Redis cannot be seeded: {error}") from error
        if int(result) != -1:
            return await self.read()
        self._stored_ours(stored)
        log.warning(
            "control state %s was not in Redis: carried over %s (revision %d) as revision %d; "
            "the file is no longer read while HOTSERVE_REDIS_URL is set",
            self.key,
            seed.source,
            snapshot.revision,
            stored.revision,
        )
        await seed.seeded(stored, snapshot.revision)
        return stored

    async def _others_may_restore(self) -> bool:
        """Whether a live replica holds a routing it will write back: someone else listens on the
        presence channel and either reports a routing, or has not reported yet (reports are rewritten
        every reconcile period; after one period without any the fleet never stored a document)."""
        numsub = await self._client.pubsub_numsub(self.presence_channel)
        others = int(numsub[0][1]) - (1 if self._subscribed else 0) if numsub else 0
        if others <= 0:
            return False
        reports = await self.replicas()
        if reports:
            return any(report.revision > 0 for report in reports)
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since = now
        return now - self._missing_since < 1.5 * self.reconcile_interval_s

    async def _write_back(self, last: ControlSnapshot, observed_revision: int) -> ControlSnapshot:
        """Store `last` as revision `last.revision + 1` (above anything a replica applied) if the
        stored revision is still `observed_revision` (0: absent); else read what another replica
        wrote meanwhile (and write ours over it if it is older, see `read`)."""
        restored = last.model_copy(update={"revision": last.revision + 1})
        doc = restored.model_dump_json()
        try:
            result = await self._cas(
                keys=[self.key, self.channel],
                args=[observed_revision, doc, restored.revision, self._signer.sign(self.key, doc.encode())],
            )
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"control state in Redis cannot be written back: {error}") from error
        if int(result) != -1:
            return await self.read()
        self._stored_ours(restored)
        log.warning(
            "control state %s was %s; wrote this replica's routing (revision %d) back as revision %d",
            self.key,
            "lost from Redis"
            if observed_revision == 0
            else f"replaced by an older routing (revision {observed_revision})",
            last.revision,
            restored.revision,
        )
        if self._events is not None:
            await self._events.restored(restored, last.revision)
        return restored

    async def watch(self, after_revision: int) -> AsyncIterator[ControlSnapshot]:
        seen = after_revision
        backoff = 0.05
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel, self.presence_channel)
                self._subscribed = True
                while True:
                    # Read after subscribing: a change published in between is not lost.
                    snapshot = await self.read()
                    backoff = 0.05
                    if snapshot.revision > seen:
                        seen = snapshot.revision
                        yield snapshot
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.reconcile_interval_s)
            except ControlSignatureInvalid:
                pass  # logged and counted once by read(); keep the last good routing
            except (RedisError, OSError, ControlStateUnavailable) as error:
                self._mark(False, error)
            except ValueError as error:
                log.error("%s", error)  # an invalid document: keep the last routing
            finally:
                self._subscribed = False
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(backoff)  # retry backoff while Redis is down, not synchronisation
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def report(self, status: ReplicaStatus) -> None:
        try:
            await self._client.hset(self.replicas_key, status.replica, status.model_dump_json())
        except (RedisError, OSError) as error:
            self._mark(False, error)  # the next report or reconcile tries again

    async def replicas(self) -> list[ReplicaStatus]:
        """Replicas that reported within three reconcile periods (older entries are removed)."""
        try:
            raw = await self._client.hgetall(self.replicas_key)
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"replica reports in Redis cannot be read: {error}") from error
        fresh_after = time.time() - 3 * self.reconcile_interval_s
        statuses: list[ReplicaStatus] = []
        stale: list[ReplicaStatus] = []
        for replica, doc in raw.items():
            status = ReplicaStatus.model_validate_json(doc)
            (statuses if status.reported_at >= fresh_after else stale).append(status)
        if stale:
            with contextlib.suppress(RedisError, OSError):
                await self._client.hdel(self.replicas_key, *(s.replica for s in stale))
        return sorted(statuses, key=lambda s: s.replica)

    async def withdraw(self, replica: str) -> None:
        try:
            await self._client.hdel(self.replicas_key, replica)
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"replica report in Redis cannot be removed: {error}") from error

    async def close(self) -> None:
        await self._client.aclose()


def _revision_of(doc: bytes) -> int | None:
    """The revision a refused document claims (for the log line and the metric), if it says."""
    try:
        revision = json.loads(doc).get("revision")
    except (ValueError, AttributeError):
        return None
    return revision if isinstance(revision, int) else None


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
