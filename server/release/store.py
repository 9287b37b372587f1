"""Where releases live: beside the control state, one record per model, with a driving lease.

`RedisReleaseStore` (Redis configured): the record is one key written by compare-and-set on its
`seq` (a Lua script), the lease a key set only if absent and renewed only by its holder, and the
fleet's evidence a hash per version that every replica writes its per-bucket window summaries
into; the driver sums them. `LocalReleaseStore` (the file control state, one replica): records
in a JSON file per model, the lease always this process's, evidence this process's recorder.

Both can change what serves, so in Redis both are as trusted as the control document: each record
and each replica's summary is stored beside an HMAC of its exact bytes and of where it is stored
(the key; for a summary, the key and its field), with the fleet's key and the control document's
signing code (`control_signing.py`). A record that does not verify is refused (`get` raises
`ControlSignatureInvalid`: 503 to an admin call, not driven), a summary that does not verify is
left out of the sum; both are reported through `refusals.py` (the control document's metric,
alert and audit). Without a key (one replica on a laptop) nothing is signed, as for the routing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis

from server.errors import Conflict
from server.evidence.summary import WindowSummary
from server.redis_access import RedisAccess, redis_access_for
from server.registry.control_signing import ControlSignatureInvalid, ControlSigner, signer_for
from server.registry.refusals import Document, Refusals, fingerprint
from server.release.record import ReleaseRecord
from server.settings import Settings

log = logging.getLogger(__name__)

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
    def location(self, model: str) -> str:
        """Where `model`'s record is stored (a Redis key, a file), as refusals name it."""
        ...

    async def get(self, model: str) -> ReleaseRecord | None:
        """The stored record; ControlSignatureInvalid (503) when it does not verify."""
        ...

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

    def location(self, model: str) -> str:
        return str(self._path(model))

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
    """Records and evidence signed with the fleet's key (`signer`) and refused, through
    `refusals`, when they do not verify (see the module doc)."""

    def __init__(
        self,
        access: RedisAccess,
        key_prefix: str,
        timeout_s: float,
        signer: ControlSigner | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self._prefix = f"{key_prefix}:release"
        self._signer = signer or ControlSigner()
        self._refusals = refusals
        self._client: redis.Redis = redis.Redis.from_url(
            access.url, **access.client_options(), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._put = self._client.register_script(_PUT)
        self._renew = self._client.register_script(_RENEW)

    def location(self, model: str) -> str:
        return f"{self._prefix}:record:{model}"

    async def get(self, model: str) -> ReleaseRecord | None:
        key = self.location(model)
        stored = await self._client.get(key)
        if stored is None:
            return None
        doc, signature, seq = _opened(stored)
        problem = self._signer.check(key, doc, signature)
        record = None
        if problem is None:
            try:
                record = ReleaseRecord.model_validate_json(doc)
            except ValueError:
                problem = "is not a valid release record"
            else:
                if record.model != model or (seq is not None and seq != record.seq):
                    problem = "belongs to another model or seq than the key it is stored under"
        if problem is not None or record is None:
            seq = seq if seq is not None else _seq_of(doc)
            refusal = ControlSignatureInvalid(
                key,
                seq,
                problem or "is not a valid release record",
                what="release record",
                consequence="not driven and nothing of it applied; DEL the key to start another release",
                unit="seq",
            )
            await self._refused("release", key, fingerprint(stored), refusal.message, model, seq)
            raise refusal
        return record

    async def put(self, record: ReleaseRecord, expected_seq: int) -> ReleaseRecord:
        key = self.location(record.model)
        out = record.model_copy(update={"seq": expected_seq + 1})
        doc = out.model_dump_json()
        stored = await self._put(
            keys=[key], args=[expected_seq, _sealed(doc, self._signer.sign(key, doc.encode()), out.seq)]
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
                field = f"{slot}:{replica}:{load}"
                doc = json.dumps(summary.to_json())
                pipe.hset(key, field, _sealed(doc, self._signer.sign(f"{key}#{field}", doc.encode())))
                keys.add(key)
            for key in keys:
                pipe.expire(key, max(1, int(ttl_s)))
            await pipe.execute()

    async def fleet(self, model: str, version: int, first: int, last: int) -> list[WindowSummary]:
        """The summaries that verify (signed for this key and field, of this model and version);
        any other is left out of the sum and reported."""
        key = f"{self._prefix}:evidence:{model}:{version}"
        fields = await self._client.hgetall(key)
        out: list[WindowSummary] = []
        refused: list[str] = []
        for raw_field, stored in fields.items():
            field = raw_field.decode(errors="replace") if isinstance(raw_field, bytes) else str(raw_field)
            slot_text = field.split(":", 1)[0]
            doc, signature, _ = _opened(stored)
            problem = self._signer.check(f"{key}#{field}", doc, signature)
            summary = None
            if problem is None:
                try:
                    summary = WindowSummary.from_json(json.loads(doc))
                except ValueError:
                    problem = "is not a valid summary"
                else:
                    if (summary.model, summary.version) != (model, version) or not slot_text.lstrip("-").isdigit():
                        problem = "is stored under another model, version or slot"
            if problem is not None or summary is None:
                refused.append(f"{field} {problem}")
                continue
            if first <= int(slot_text) <= last:
                out.append(summary)
        if refused:
            message = (
                f"release evidence {key}: {len(refused)} summaries left out ({'; '.join(sorted(refused)[:3])}"
                f"{'; ...' if len(refused) > 3 else ''})"
            )
            await self._refused("evidence", key, fingerprint(*sorted(refused)), message, model, version)
        elif self._refusals is not None:
            self._refusals.verified("evidence", key)
        return out

    async def _refused(
        self, document: Document, where: str, print_: str, message: str, model: str, revision: int | None
    ) -> None:
        if self._refusals is None:
            log.error("%s", message)
        else:
            await self._refusals.refused(document, where, print_, message, model, revision)

    async def close(self) -> None:
        await self._client.aclose()


def open_release_store(settings: Settings, refusals: Refusals | None = None) -> ReleaseStore:
    """Redis when `HOTSERVE_REDIS_URL` is set (the fleet's control store, signed with its key),
    else files beside the control state file."""
    access = redis_access_for(settings)
    if access is None:
        return LocalReleaseStore(settings.resolved_control_state_path.parent / "releases")
    return RedisReleaseStore(
        access,
        settings.control_key_prefix,
        settings.control_redis_timeout_ms / 1000.0,
        signer_for(settings),
        refusals,
    )


def _sealed(doc: str, signature: str, seq: int | None = None) -> str:
    """What is stored: the document's exact bytes (as a string) beside their signature; `seq` at
    the top for the record's compare-and-set."""
    envelope: dict[str, object] = {"doc": doc, "sig": signature}
    if seq is not None:
        envelope = {"seq": seq, **envelope}
    return json.dumps(envelope)


def _opened(stored: bytes | str) -> tuple[bytes, str | None, int | None]:
    """(document, signature, envelope's seq) of a stored value; a bare document (written before
    records were signed, or by hand) has no signature."""
    raw = stored if isinstance(stored, bytes) else stored.encode()
    try:
        envelope = json.loads(raw)
    except ValueError:
        return raw, None, None
    if isinstance(envelope, dict) and isinstance(envelope.get("doc"), str):
        signature = envelope.get("sig")
        seq = envelope.get("seq")
        return (
            envelope["doc"].encode(),
            signature if isinstance(signature, str) else None,
            seq if isinstance(seq, int) else None,
        )
    return raw, None, None


def _seq_of(doc: bytes) -> int | None:
    """The seq a refused record claims (for the message), if it says."""
    try:
        seq = json.loads(doc).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None
