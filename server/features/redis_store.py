"""`RedisFeatureStore`: online features in Redis (redis-py asyncio, hiredis parser).

One entity is one string key, `<view.key_prefix><entity>`, holding the JSON object of
`features/values.py`; a lookup batch is one `MGET`: one round trip however many keys.
Timeouts are short (`HOTSERVE_REDIS_TIMEOUT_MS`, bounding the whole lookup) and redis-py
retries a broken connection only once: the circuit breaker above decides what happens next. Every Redis error becomes
`FeatureStoreUnavailable` here; nothing above this module imports redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.contract.manifest import FeatureView
from server.errors import FeatureStoreUnavailable
from server.features.store import EntityWrite, StoredRow
from server.features.values import decode_stored, encode_stored
from server.redis_access import RedisAccess, redacted

__all__ = ["REDIS_ERRORS", "RedisFeatureStore", "open_client", "redacted", "unavailable"]

WRITE_CHUNK_ROWS = 1000
"""Rows per pipelined write round trip."""


def open_client(access: RedisAccess, timeout_s: float, socket_timeout_s: float) -> Redis:
    """A redis-py asyncio client for feature reads: `access`'s password and TLS CA, short connect
    timeout, one retry, no health checks."""
    return Redis.from_url(
        access.url,
        **access.client_options(),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=timeout_s,
        # One immediate retry, on a fresh connection: after a Redis restart each pooled
        # connection is stale once, which must not count as Redis being down.
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )


def unavailable(where: str, timeout_s: float, exc: BaseException) -> FeatureStoreUnavailable:
    """The error a failed Redis round trip becomes (a timeout says how long it waited)."""
    reason = (
        f"no answer within {timeout_s * 1000:.0f} ms"
        if isinstance(exc, TimeoutError)
        else f"{type(exc).__name__}: {exc}"
    )
    return FeatureStoreUnavailable(f"feature store {where} unavailable ({reason})")


REDIS_ERRORS = (RedisError, OSError, TimeoutError)
"""What a Redis round trip raises when Redis cannot answer."""


class RedisFeatureStore:
    """Feature rows in Redis; reads are one MGET, writes pipelined SETs with an expiry."""

    backend = "redis"

    def __init__(self, url: str | RedisAccess, timeout_s: float, write_timeout_s: float | None = None) -> None:
        access = url if isinstance(url, RedisAccess) else RedisAccess(url)
        self._where = access.shown
        self._timeout_s = timeout_s
        self._write_timeout_s = write_timeout_s if write_timeout_s is not None else max(timeout_s, 5.0)
        self._redis = open_client(access, timeout_s, self._write_timeout_s)

    def describe(self) -> str:
        return f"redis at {self._where}"

    def is_empty(self, view: FeatureView) -> bool:
        return False  # knowing would take a SCAN of the keyspace: never on the request path

    def _unavailable(self, exc: BaseException) -> FeatureStoreUnavailable:
        return unavailable(self.describe(), self._timeout_s, exc)

    async def get_many(self, entity_keys: Sequence[str], view: FeatureView) -> list[StoredRow]:
        prefix = view.key_prefix
        keys = [prefix + entity for entity in entity_keys]
        try:
            async with asyncio.timeout(self._timeout_s):
                raw: list[Any] = await self._redis.mget(keys)  # bytes | None (no decode_responses)
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return [None if value is None else decode_stored(key, value, view) for key, value in zip(keys, raw)]

    async def put_many(self, rows: Sequence[EntityWrite], view: FeatureView, ttl_s: float | None) -> int:
        prefix = view.key_prefix
        expire_ms = None if ttl_s is None else max(1, round(ttl_s * 1000))
        try:
            for start in range(0, len(rows), WRITE_CHUNK_ROWS):
                async with asyncio.timeout(self._write_timeout_s):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for row in rows[start : start + WRITE_CHUNK_ROWS]:
                            pipe.set(prefix + row.entity, encode_stored(row), px=expire_ms)
                        await pipe.execute()
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return len(rows)

    async def close(self) -> None:
        await self._redis.aclose()
