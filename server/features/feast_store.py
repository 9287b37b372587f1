"""`FeastRedisFeatureStore`: features that `feast materialize` wrote to Redis, read in Feast's layout.

Behind the same `FeatureStore` protocol as `RedisFeatureStore`, so the local cache, gathering,
breaker, staleness and metrics of `lookup.py` apply unchanged. A lookup batch is one pipeline of
`HMGET`s, one per entity (Feast keeps one hash per entity), each naming every feature field and
the `_ts:` field of every Feast feature view the hotserve view reads: one round trip however many
entities and Feast views. Layout details (keys, fields, `Value` decoding) are in `feast_layout.py`.

An entity is present when at least one of its Feast views has a `_ts:` field; its event time is
the oldest of those (the view's `max_age_s` holds for every value it returns). A feature whose
field is absent, empty (Feast's null) or whose Feast view has no timestamp is missing, never zero.
hotserve never writes Feast's hashes: `put_many` refuses.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from server.contract.manifest import FeastSource, FeatureView
from server.errors import FeatureStoreUnavailable, FeatureValueInvalid
from server.features.feast_layout import (
    LayoutError,
    decode_timestamp,
    decode_value,
    feature_field,
    key_names,
    timestamp_field,
    typed_value,
)
from server.features.redis_store import REDIS_ERRORS, open_client, unavailable
from server.features.store import EntityRow, EntityWrite, FeatureValue, StoredRow
from server.features.values import parse_value, value_limits
from server.redis_access import RedisAccess

_DOUBLE = struct.Struct("<d")


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """How one hotserve view reads Feast's hashes, worked out once per view."""

    view: FeatureView
    key_head: bytes
    """Serialized entity key up to its value: key count, then the join key's name."""
    value_type: str
    project: bytes
    features: tuple[tuple[str, Callable[[FeatureValue], FeatureValue], int], ...]
    """(hotserve name, its checked conversion, index of its Feast view among the `_ts:` fields)."""
    feast_views: tuple[str, ...]
    command_head: bytes
    """RESP of `HMGET` up to its key: array length, command name."""
    command_tail: bytes
    """RESP of every field (each feature's, then each Feast view's `_ts:`): what follows the key."""

    def key(self, entity: str) -> bytes:
        """The Redis key of one entity's hash (one join key: nothing to sort)."""
        value = int(entity) if self.value_type == "INT64" else entity
        return self.key_head + typed_value(self.value_type, value) + self.project

    def commands(self, entity_keys: Sequence[str]) -> bytes:
        """One write holding an HMGET per entity (fields packed once per view, not per call)."""
        parts: list[bytes] = []
        for entity in entity_keys:
            key = self.key(entity)
            parts += (self.command_head, b"$%d\r\n" % len(key), key, b"\r\n", self.command_tail)
        return b"".join(parts)


def _converter(datatype: str) -> Callable[[FeatureValue], FeatureValue]:
    """`parse_value(datatype, value)`, with the common case (the Feast type matches) checked inline."""
    if datatype == "BOOL":
        return lambda value: value if value is True or value is False else parse_value(datatype, value)
    low, high = value_limits(datatype)
    if datatype.startswith("FP"):
        # NaN fails both comparisons, so it falls through to parse_value, which refuses it.
        return lambda value: value if type(value) is float and low <= value <= high else parse_value(datatype, value)
    return lambda value: value if type(value) is int and low <= value <= high else parse_value(datatype, value)


def _plan(view: FeatureView, source: FeastSource) -> _ReadPlan:
    feast_views = source.feature_views
    features: list[tuple[str, Callable[[FeatureValue], FeatureValue], int]] = []
    fields: list[bytes] = []
    for feature in view.features:
        feast_view, feast_feature = source.features[feature.name].split(":", 1)
        fields.append(feature_field(feast_view, feast_feature))
        features.append((feature.name, _converter(feature.datatype), feast_views.index(feast_view)))
    fields.extend(timestamp_field(feast_view) for feast_view in feast_views)
    return _ReadPlan(
        view=view,
        key_head=key_names([view.entity_key]),
        value_type=view.entity_key_type,
        project=source.project.encode(),
        features=tuple(features),
        feast_views=tuple(feast_views),
        command_head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2),
        command_tail=b"".join(b"$%d\r\n%s\r\n" % (len(field), field) for field in fields),
    )


class FeastRedisFeatureStore:
    """Feast's Redis online store, read directly: one pipelined round trip of HMGETs per batch."""

    backend = "feast"

    def __init__(self, url: str | RedisAccess, timeout_s: float) -> None:
        access = url if isinstance(url, RedisAccess) else RedisAccess(url)
        self._where = access.shown
        self._timeout_s = timeout_s
        self._redis = open_client(access, timeout_s, timeout_s)
        self._plans: dict[int, _ReadPlan] = {}

    def describe(self) -> str:
        return f"Feast's redis online store at {self._where}"

    def is_empty(self, view: FeatureView) -> bool:
        return False  # knowing would take a SCAN of Feast's keyspace: never on the request path

    def _plan(self, view: FeatureView) -> _ReadPlan:
        plan = self._plans.get(id(view))
        if plan is None or plan.view is not view:
            if view.feast is None:
                raise FeatureStoreUnavailable(f"feature view {view.label} is not a Feast view")
            plan = self._plans[id(view)] = _plan(view, view.feast)
        return plan

    async def get_many(self, entity_keys: Sequence[str], view: FeatureView) -> list[StoredRow]:
        plan = self._plan(view)
        payload = plan.commands(entity_keys)
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    replies = await self._round_trip(payload, len(entity_keys))
                except (RedisConnectionError, OSError):
                    # A pooled connection gone stale (Redis restarted): one retry on a fresh one,
                    # as redis-py's own retry does for the native store.
                    replies = await self._round_trip(payload, len(entity_keys))
        except REDIS_ERRORS as exc:
            raise unavailable(self.describe(), self._timeout_s, exc) from None
        return [
            _invalid(plan, entity, None, reply) if isinstance(reply, ResponseError) else _row(plan, entity, reply)
            for entity, reply in zip(entity_keys, replies)
        ]

    async def _round_trip(self, payload: bytes, count: int) -> list[Any]:
        """Write every HMGET at once, then read their `count` replies: a pipeline whose commands
        are packed once per view. redis-py's `pipeline()` packs each of the N x fields arguments
        on every call, which at 100 entities x 50 features costs more than the round trip."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(payload, check_health=False)
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # the whole reply was read: the connection stays in step
                    replies.append(exc)
            return replies
        except BaseException:
            await connection.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(connection)

    async def put_many(self, rows: Sequence[EntityWrite], view: FeatureView, ttl_s: float | None) -> int:
        raise FeatureStoreUnavailable(
            f"feature view {view.label} is materialized by Feast: write it with `feast materialize`"
        )

    async def close(self) -> None:
        await self._redis.aclose()


def _row(plan: _ReadPlan, entity: str, reply: list[bytes | None]) -> StoredRow:
    """One HMGET reply as a row: None when none of its Feast views wrote this entity."""
    first_ts = len(plan.features)
    times: dict[int, float] = {}
    for index, feast_view in enumerate(plan.feast_views):
        raw = reply[first_ts + index]
        if raw:
            try:
                times[index] = decode_timestamp(raw)
            except LayoutError as exc:
                return _invalid(plan, entity, f"_ts:{feast_view}", exc)
    if not times:
        return None
    values: dict[str, FeatureValue] = {}
    for (name, convert, view_index), raw in zip(plan.features, reply):
        if not raw or view_index not in times:
            continue
        try:
            # Feast's DOUBLE (field 5, fixed64: tag 0x29) is by far the commonest value: read inline.
            value = _DOUBLE.unpack_from(raw, 1)[0] if raw[0] == 0x29 and len(raw) == 9 else decode_value(raw)
            if value is not None:
                values[name] = convert(value)
        except ValueError as exc:  # LayoutError too
            return _invalid(plan, entity, name, exc)
    return EntityRow(values, min(times.values()))


def _invalid(plan: _ReadPlan, entity: str, feature: str | None, exc: Exception) -> FeatureValueInvalid:
    return FeatureValueInvalid(f"feast:{plan.project.decode()}:{plan.view.entity_key}={entity}", feature, str(exc))
