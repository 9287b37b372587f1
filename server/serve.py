"""`hotserve serve`: settings from flags and env, uvicorn (uvloop + httptools), graceful shutdown.

Every `Settings` field but the secrets is a flag of the same name (`model_repository` ->
`--model-repository`); a flag overrides its `HOTSERVE_*` variable. Secrets (`HOTSERVE_REDIS_URL`,
which may hold a password, and the admin tokens) come from the environment only: a flag would
show in `ps`; `--redis-url` is refused with that reason.

Graceful shutdown: uvicorn's own SIGTERM handling closes the listening sockets and
then waits for connections, so a load balancer still routing here would see
refused connections while readiness is still true. `DrainingServer` takes over the
signal: readiness turns false and new inference gets 503 at once, accepted requests
finish (bounded by `shutdown_grace_s`), and only then does uvicorn shut down and the
lifespan close the registry. The process exits 0. A second signal forces the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import typing
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from server.api.admin_auth import AdminTokensInvalid
from server.api.deps import Edge
from server.api.http_protocol import DrainState, OneWriteHttpToolsProtocol
from server.app import create_app
from server.logs import configure_logging
from server.registry.memory import tune_allocator
from server.settings import Settings
from server.shutdown import ShutdownSteps

logger = logging.getLogger(__name__)


def flag_fields() -> dict[str, FieldInfo]:
    """`Settings` fields that are flags: all but secrets (a flag shows in `ps`)."""
    return {
        name: field
        for name, field in Settings.model_fields.items()
        if SecretStr not in typing.get_args(field.annotation) and field.annotation is not SecretStr
    }


def secret_fields() -> list[str]:
    """`Settings` fields read from the environment only."""
    return [name for name in Settings.model_fields if name not in flag_fields()]


def secret_flag_refusal(arguments: Sequence[str]) -> str | None:
    """Why an argument naming a secret setting (`--redis-url ...`) is not a flag, or None.

    The Redis URL is the one place redis-py takes the password (`redis://:pw@host`), so it stays
    one setting, environment only, rather than a credential-free flag beside a password secret.
    """
    secrets = secret_fields()
    for argument in arguments:
        name = argument.partition("=")[0].removeprefix("--").replace("-", "_")
        if argument.startswith("--") and name in secrets:
            return (
                f"{argument.partition('=')[0]} is not a flag: HOTSERVE_{name.upper()} may hold a password or "
                f"token and a flag shows in `ps`; set HOTSERVE_{name.upper()} in the environment"
            )
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `Settings` field except secrets; unset flags leave the env/default value alone."""
    parser.epilog = (
        "Environment only (they may hold a password or token, and a flag shows in `ps`): "
        + ", ".join(f"HOTSERVE_{name.upper()}" for name in secret_fields())
        + "."
    )
    for name, field in flag_fields().items():
        flag = "--" + name.replace("_", "-")
        env = f"HOTSERVE_{name.upper()}"
        description = (field.description or name.replace("_", " ")).replace("%", "%%")
        help_text = f"{description} (env {env}; default {_default_text(field.default)})"
        if field.annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from env, with the flags given on the command line taking precedence."""
    overrides = {name: getattr(args, name) for name in flag_fields() if hasattr(args, name)}
    return Settings(**overrides)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"hotserve serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    tune_allocator()  # unloaded versions' memory goes back to the OS (server/registry/memory.py)
    try:
        app = create_app(settings)
    except AdminTokensInvalid as exc:
        print(f"hotserve serve: invalid admin tokens: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=OneWriteHttpToolsProtocol,  # uvicorn's httptools protocol, one write per answer
        server_header=False,  # no "server: uvicorn": the software and its version are nobody's business
        lifespan="on",
        log_config=None,  # configure_logging already routed uvicorn's loggers through ours
        log_level=settings.log_level,
        access_log=settings.access_log,
        # Forwarded client addresses matter only to the access log (nothing else reads them);
        # without it, no proxy-headers layer per request.
        proxy_headers=settings.access_log,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )
    server = DrainingServer(config, app, settings.shutdown_grace_s)
    server.run()
    return 0 if server.started else 1


def tune_gc() -> None:
    """Keep the cyclic GC off the tail latency once the app is loaded.

    Everything alive after startup (frameworks, sessions, manifests) is moved out of the
    collector's sight: otherwise the periodic full collections walk that whole heap while
    requests wait, which showed up as 30-50 ms stalls at the p99 of the demo model under load.
    """
    gc.collect()
    gc.freeze()


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain step between the signal and closing the sockets."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._state = DrainState()
        self.server_state = self._state
        self._app = app
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Future[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        tune_gc()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        steps: ShutdownSteps | None = getattr(self._app.state, "shutdown", None)
        if steps is not None and steps.left_behind:
            # asyncio.run's teardown would cancel and await them again, and a step that ignores
            # its cancellation would keep the process alive until the pod is killed.
            logger.error("exiting without the event loop's teardown: %s never finished", ", ".join(steps.left_behind))
            logging.shutdown()
            os._exit(0)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal.signal handler on the loop's thread, between two bytecodes:
        # plain attribute writes are safe, scheduling goes through call_soon_threadsafe.
        # Not calling super() also keeps uvicorn from re-raising the signal after
        # shutdown, which would end the process with -SIGTERM instead of 0.
        edge: Edge | None = getattr(self._app.state, "edge", None)
        if self._draining or self.should_exit:
            logger.warning("second %s: exiting without waiting", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        if edge is None or self._loop is None or not self.started:
            self.should_exit = True  # still starting: nothing accepted yet
            return
        self._draining = True
        edge.inflight.begin_drain(self._grace_s)
        logger.info(
            "%s: draining %d in-flight requests (grace %.1f s)",
            signal.Signals(sig).name,
            edge.inflight.count,
            self._grace_s,
        )
        self._loop.call_soon_threadsafe(self._start_drain, edge)

    def _start_drain(self, edge: Edge) -> None:
        self._state.drain()  # every answer from now on closes its connection
        self._drain_task = asyncio.ensure_future(self._drain(edge))

    async def _drain(self, edge: Edge) -> None:
        idle = await edge.inflight.wait_idle(edge.inflight.grace_left(self._grace_s))
        if not idle:
            logger.warning("grace period over with %d requests still in flight", edge.inflight.count)
        self.should_exit = True


def _default_text(value: Any) -> str:
    return "unset" if value is None or value == "" else str(value)
