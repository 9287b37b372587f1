"""Bounded shutdown steps: a process told to stop exits within its grace period, whatever a
dependency does.

A step that overruns its bound is logged by name and left behind; the others still run. A step
left behind may ignore its cancellation too, and the event loop's own teardown (`asyncio.run`
cancels and awaits every task) would then wait for it: `hotserve serve` exits without that
teardown when `ShutdownSteps.left_behind` is not empty (server/serve.py). One known cause is a Redis connection whose close waits forever on its
transport (redis-py #3941); a shutdown must not hang on it until Kubernetes kills the pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

STEP_BOUND_S = 5.0
"""What a step that only closes connections or cancels tasks may take."""


async def bounded(name: str, step: Coroutine[Any, Any, object], timeout_s: float = STEP_BOUND_S) -> bool:
    """Run `step` for at most `timeout_s`; True when it finished. An exception is logged, not raised:
    the steps after it must still run."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        # Not cancelled and awaited: a step that hangs may hang on its cancellation too.
        task.cancel()
        log.warning("shutdown: %s did not finish within %.1f s; going on without it", name, timeout_s)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("shutdown: %s failed", name, exc_info=task.exception())
    return True


class ShutdownSteps:
    """The bounded steps of one shutdown, and the names of those left behind."""

    def __init__(self) -> None:
        self.left_behind: list[str] = []

    async def run(self, name: str, step: Coroutine[Any, Any, object], timeout_s: float = STEP_BOUND_S) -> None:
        if not await bounded(name, step, timeout_s):
            self.left_behind.append(name)
