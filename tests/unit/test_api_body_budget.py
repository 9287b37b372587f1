"""The bytes of request bodies in flight: taken before a body is read (declared) or as it arrives
(chunked), refused beyond the limit with nothing held, and given back whatever ends the read."""

from __future__ import annotations

import pytest
from starlette.types import Message, Receive

from server.api.body_budget import BodyBudget
from server.api.inference import _ClientGone, _read_body
from server.errors import BodiesInFlightFull, PayloadTooLarge


def messages(*items: Message) -> Receive:
    queue = list(items)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


def chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_declared_body_is_taken_in_full_before_it_is_read_and_refused_beyond_the_limit() -> None:
    budget = BodyBudget(100)
    body = await _read_body(messages(chunk(b"x" * 60, False)), b"60", 1000, budget)
    assert budget.held_bytes == len(body) == 60  # the caller gives it back once answered
    with pytest.raises(BodiesInFlightFull, match="holds 60 bytes of request bodies; 41 more would pass"):
        await _read_body(messages(), b"41", 1000, budget)  # nothing received
    assert budget.held_bytes == 60


async def test_a_chunked_body_is_taken_as_it_arrives_and_every_failure_gives_it_back() -> None:
    budget = BodyBudget(100)
    with pytest.raises(BodiesInFlightFull):
        await _read_body(messages(chunk(b"x" * 60, True), chunk(b"x" * 60, False)), None, 1000, budget)
    assert budget.held_bytes == 0
    with pytest.raises(PayloadTooLarge):
        await _read_body(messages(chunk(b"x" * 60, True), chunk(b"x" * 30, False)), None, 80, budget)
    assert budget.held_bytes == 0
    with pytest.raises(_ClientGone):
        await _read_body(messages(chunk(b"x" * 60, True), {"type": "http.disconnect"}), b"90", 1000, budget)
    assert budget.held_bytes == 0
