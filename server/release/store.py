"""Where releases live: beside the control state, one record per model, with a driving lease.

`RedisReleaseStore` (Redis configured): the record is one key written by compare-and-set on its
`seq` (a Lua script), the lease a key set only if absent and renewed only by its holder, and the
fleet's evidence a hash per version that every replica writes its per-bucket window summaries
into; the driver sums them. `LocalReleaseStore` (the file control state, one replica): records
in a JSON file per model, the lease always this process's, evidence this process's recorder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis

from server.errors import Conflict
from server.evidence.summary import WindowSummary
from server.redis_access import RedisAccess, redis_access_for
from server.release.record import ReleaseRecord
from server.settings import Settings

_PUT = """
local stored = redis.call('GET', KEYS[1])
local seq = 0
if stored then seq = cjson.decode(stored)['seq'] end
if seq ~= tonumber(ARGV[1]) then return seq end
redis.call('SET', KEYS[1], ARGV[2])
return -1
"""

_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""


class ReleaseStore(Protocol):
    async def get(self, model: str) -> ReleaseRecord | None: ...

    async def put(self, record: ReleaseRecord, expected_seq: int) -> ReleaseRecord:
        """Store `record` as seq `expected_seq + 1`; Conflict when the stored seq is another."""
        ...

    async def models(self) -> list[str]:
        """Models with a stored release (finished ones included)."""
        ...

    async def hold(self, model: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease on driving `model`'s release; False: another replica holds it."""
        ...

    async def publish(self, replica: str, summaries: Iterable[tuple[int, WindowSummary]], ttl_s: float) -> None:
        """This replica's per-bucket summaries (bucket slot, summary) for the fleet's sum."""
        ...

    async def fleet(self, model: str, version: int, first: int, last: int) -> list[WindowSummary]:
        """Every replica's summaries of `version` in buckets `first`..`last`."""
        ...

    async def close(self) -> None: ...


class LocalReleaseStore:
    """One replica over the file control state: JSON files, the lease is always ours."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _path(self, model: str) -> Path:
        return self._directory / f"{model}.json"

    async def get(self, model: str) -> ReleaseRecord | None:
        try:
            return ReleaseRecord.model_validate_json(self._path(model).read_bytes())
        except FileNotFoundError:
            return None

    async def put(self, record: ReleaseRecord, expected_seq: int) -> ReleaseRecord:
        stored = await self.get(record.model)
        if (0 if stored is None else stored.seq) != expected_seq:
            raise Conflict(f"the release of {record.model!r} changed meanwhile; try again")
        out = record.model_copy(update={"seq": expected_seq + 1})
        self._directory.mkdir(parents=True, exist_ok=True)
        temporary = self._path(record.model).with_suffix(".tmp")
        temporary.write_text(out.model_dump_json())
        os.replace(temporary, self._path(record.model))
        return out

    async def models(self) -> list[str]:
        return sorted(p.stem for p in self._directory.glob("*.json"))

    async def hold(self, model: str, holder: str, ttl_s: float) -> bool:
        return True

    async def publish(self, replica: str, summaries: Iterable[tuple[int, WindowSummary]], ttl_s: float) -> None:
        return None

    async def fleet(self, model: str, version: int, first: int, last: int) -> list[WindowSummary]:
        raise NotImplementedError("a local store has no fleet evidence; the driver reads its own recorder")

    async def close(self) -> None:
        return None


class RedisReleaseStore:
    def __init__(self, access: RedisAccess, key_prefix: str, timeout_s: float) -> None:
        self._prefix = f"{key_prefix}:release"
        self._client: redis.Redis = redis.Redis.from_url(
            access.url, **access.client_options(), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._put = self._client.register_script(_PUT)
        self._renew = self._client.register_script(_RENEW)

    async def get(self, model: str) -> ReleaseRecord | None:
        doc = await self._client.get(f"{self._prefix}:record:{model}")
        return None if doc is None else ReleaseRecord.model_validate_json(doc)

    async def put(self, record: ReleaseRecord, expected_seq: int) -> ReleaseRecord:
        out = record.model_copy(update={"seq": expected_seq + 1})
        stored = await self._put(
            keys=[f"{self._prefix}:record:{record.model}"], args=[expected_seq, out.model_dump_json()]
        )
        if int(stored) != -1:
            raise Conflict(f"the release of {record.model!r} changed meanwhile (seq {stored}); try again")
        await self._client.sadd(f"{self._prefix}:models", record.model)
        return out

    async def models(self) -> list[str]:
        members = await self._client.smembers(f"{self._prefix}:models")
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def hold(self, model: str, holder: str, ttl_s: float) -> bool:
        return bool(await self._renew(keys=[f"{self._prefix}:lease:{model}"], args=[holder, int(ttl_s * 1000)]))

    async def publish(self, replica: str, summaries: Iterable[tuple[int, WindowSummary]], ttl_s: float) -> None:
        keys: set[str] = set()
        async with self._client.pipeline(transaction=False) as pipe:
            for slot, summary in summaries:
                key = f"{self._prefix}:evidence:{summary.model}:{summary.version}"
                load = summary.loads[0] if summary.loads else replica
                pipe.hset(key, f"{slot}:{replica}:{load}", json.dumps(summary.to_json()))
                keys.add(key)
            for key in keys:
                pipe.expire(key, max(1, int(ttl_s)))
            await pipe.execute()

    async def fleet(self, model: str, version: int, first: int, last: int) -> list[WindowSummary]:
        fields = await self._client.hgetall(f"{self._prefix}:evidence:{model}:{version}")
        out: list[WindowSummary] = []
        for field, doc in fields.items():
            slot = int((field.decode() if isinstance(field, bytes) else str(field)).split(":", 1)[0])
            if first <= slot <= last:
                out.append(WindowSummary.from_json(json.loads(doc)))
        return out

    async def close(self) -> None:
        await self._client.aclose()


def open_release_store(settings: Settings) -> ReleaseStore:
    """Redis when `HOTSERVE_REDIS_URL` is set (the fleet's control store), else files beside the
    control state file."""
    access = redis_access_for(settings)
    if access is None:
        return LocalReleaseStore(settings.resolved_control_state_path.parent / "releases")
    return RedisReleaseStore(access, settings.control_key_prefix, settings.control_redis_timeout_ms / 1000.0)
