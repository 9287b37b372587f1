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
"""

from __future__ import annotations

import asyncio
import contextlib
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
from server.registry.control_state import ControlSnapshot, ReplicaStatus

log = logging.getLogger(__name__)

# KEYS[1] = hash, KEYS[2] = channel; ARGV[1] = expected revision, ARGV[2] = new doc, ARGV[3] = new revision
_COMPARE_AND_SET = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if stored ~= tonumber(ARGV[1]) then
  return stored
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'revision', ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return -1
"""

MAX_BACKOFF_S = 2.0


class RedisControlState:
    """The `ControlSnapshot` as one Redis hash with a revision, changes published on a channel."""

    def __init__(
        self,
        url: str,
        key_prefix: str = "hotserve",
        timeout_s: float = 0.5,
        reconcile_interval_s: float = 5.0,
        on_up_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.key = f"{key_prefix}:control"
        self.channel = f"{key_prefix}:control:changes"
        self.replicas_key = f"{key_prefix}:control:replicas"
        self.reconcile_interval_s = reconcile_interval_s
        # One retry on a dropped connection: a pooled connection goes stale when Redis restarts.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._cas = self._client.register_script(_COMPARE_AND_SET)
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

    async def read(self) -> ControlSnapshot:
        try:
            doc = await self._client.hget(self.key, "doc")
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"control state in Redis cannot be read: {error}") from error
        self._mark(True)
        if doc is None:
            return ControlSnapshot()
        try:
            return ControlSnapshot.model_validate_json(doc)
        except ValidationError as error:
            # Refuse to guess, as the file store does.
            raise ValueError(f"control state {self.key} in Redis is invalid: {error}") from error

    async def write(self, snapshot: ControlSnapshot, expected_revision: int) -> ControlSnapshot:
        stored = snapshot.model_copy(update={"revision": expected_revision + 1})
        try:
            result = await self._cas(
                keys=[self.key, self.channel], args=[expected_revision, stored.model_dump_json(), stored.revision]
            )
        except (RedisError, OSError) as error:
            self._mark(False, error)
            raise ControlStateUnavailable(f"control state in Redis cannot be written: {error}") from error
        self._mark(True)
        if int(result) != -1:
            raise ControlConflict(expected_revision, int(result))
        return stored

    async def watch(self, after_revision: int) -> AsyncIterator[ControlSnapshot]:
        seen = after_revision
        backoff = 0.05
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    # Read after subscribing: a change published in between is not lost.
                    snapshot = await self.read()
                    backoff = 0.05
                    if snapshot.revision > seen:
                        seen = snapshot.revision
                        yield snapshot
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.reconcile_interval_s)
            except (RedisError, OSError, ControlStateUnavailable) as error:
                self._mark(False, error)
            except ValueError as error:
                log.error("%s", error)  # an invalid document: keep the last routing
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
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
