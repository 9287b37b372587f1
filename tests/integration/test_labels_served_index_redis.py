"""The Redis served index against a real redis-server: a batch of captured rows (`put_rows`, one
pipeline) reads back as the entries the embedded index keeps, and expires with the horizon."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from redis_process import RedisProcess, start_redis
from server.capture.record import CaptureRecord, ServedRows
from server.labels.served_index import RedisServedIndex, ServedEntry

TS = datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    process = start_redis()
    yield process
    process.stop()


def test_a_batch_of_rows_reads_back_by_request_id_and_row_with_the_shadows_answer(redis_server: RedisProcess) -> None:
    client = redis.Redis.from_url(redis_server.url())
    index = RedisServedIndex(client, "hotserve", 60.0)
    records = [
        CaptureRecord("a", 0, TS, "m", 3, "v2", {"x": 1.0}, {"p": 0.25, "tags": ["x"]}),
        CaptureRecord("a", 1, TS, "m", 3, "v2", {"x": 2.0}, {"p": 0.75, "tags": ["y"]}, 4, {"p": 0.5, "tags": ["z"]}),
    ]
    (rows,) = ServedRows.of_records(records)
    index.put_rows(rows)
    assert index.get_many("m", [("a", 0), ("a", 1), ("a", 2)]) == [
        ServedEntry(3, TS.timestamp(), {"p": 0.25}),
        ServedEntry(3, TS.timestamp(), {"p": 0.75}, 4, {"p": 0.5}),
        None,
    ]
    ttl_ms = client.pttl("hotserve:served:m:a:1")
    assert 0 < ttl_ms <= 60_000
    index.close()
