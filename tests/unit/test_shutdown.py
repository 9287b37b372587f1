"""Bounded shutdown steps: one that hangs, even on its cancellation, does not hold the others up."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.shutdown import bounded


async def test_a_step_that_finishes_is_awaited() -> None:
    done: list[str] = []

    async def close() -> None:
        await asyncio.sleep(0)
        done.append("closed")

    assert await bounded("a store", close(), 5.0)
    assert done == ["closed"]


async def test_a_step_that_hangs_through_its_cancellation_is_left_behind_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport_closed = asyncio.Event()
    ended = asyncio.Event()

    async def hang() -> None:  # the shape of a close stuck on a transport that never closes
        try:
            while not transport_closed.is_set():
                try:
                    await transport_closed.wait()
                except asyncio.CancelledError:
                    continue
        finally:
            ended.set()

    with caplog.at_level(logging.WARNING, logger="server.shutdown"):
        assert not await bounded("the control store", hang(), 0.05)
    assert "the control store did not finish within 0.1 s" in caplog.text
    assert not ended.is_set()
    transport_closed.set()  # let it go, or the test's own event loop could not close
    await ended.wait()


async def test_a_step_that_fails_is_logged_and_the_caller_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise OSError("connection reset")

    with caplog.at_level(logging.ERROR, logger="server.shutdown"):
        assert await bounded("the feature store", fail(), 5.0)
    assert "shutdown: the feature store failed" in caplog.text and "connection reset" in caplog.text
