"""Test-only launcher: the real `hotserve serve`, in this process, with every run of a model whose
name starts with `gated` held at a gate that the test works over a Unix socket.

    python tests/integration/gated_serve.py GATE_SOCKET serve [hotserve serve flags...]

Everything else is the real server (uvicorn, the edge, the batcher, the executor's threads, the
onnxruntime sessions): only the moment a gated model's batch runs is controlled. Queueing and
draining tests then wait on events ("a run has entered") instead of on how slow a model is.

The gate protocol is one command per connection, a line in and a line out (`ok` or `error: ...`):

    close           gated runs arriving from now on wait; the count of arrivals restarts at 0
    wait-entered N  answer once N gated runs have arrived since `close`
    release N       let N waiting (or future) runs through
    open            let every run through, now and later: the state at start, so warm-up passes
"""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from load_tests.server_process import ServerProcess

GATED_PREFIX = "gated"
HOLD_LIMIT_S = 120.0
"""A run held longer fails (the test never released it) instead of keeping the process alive."""
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS


class Gate:
    """Where gated runs wait, on the executor's worker threads."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._permits: int | None = None  # None: open
        self._arrived = 0

    def pass_through(self) -> None:
        """Called by a gated run before it runs: returns when the gate lets it through."""
        with self._changed:
            self._arrived += 1
            self._changed.notify_all()
            if not self._changed.wait_for(lambda: self._permits != 0, HOLD_LIMIT_S):
                raise RuntimeError(f"gate held this run for {HOLD_LIMIT_S} s: the test never released it")
            if self._permits is not None:
                self._permits -= 1

    def close(self) -> None:
        with self._changed:
            self._permits = 0
            self._arrived = 0

    def release(self, runs: int) -> None:
        with self._changed:
            if self._permits is not None:
                self._permits += runs
                self._changed.notify_all()

    def open(self) -> None:
        with self._changed:
            self._permits = None
            self._changed.notify_all()

    def wait_entered(self, runs: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._arrived >= runs, HOLD_LIMIT_S)

    def command(self, line: str) -> str:
        """Carry out one protocol line; returns the answer line."""
        verb, _, argument = line.strip().partition(" ")
        try:
            if verb == "close":
                self.close()
            elif verb == "open":
                self.open()
            elif verb == "release":
                self.release(int(argument))
            elif verb == "wait-entered":
                if not self.wait_entered(int(argument)):
                    return f"error: fewer than {argument} runs entered in {HOLD_LIMIT_S} s"
            else:
                return f"error: unknown command {line.strip()!r}"
        except ValueError:
            return f"error: {verb} needs a whole number, got {argument!r}"
        return "ok"


def hold_gated_runs(gate: Gate) -> None:
    """Make every `OnnxRuntime` built for a `gated*` model pass `gate` before each run."""
    from server.runtime.onnx import OnnxRuntime

    build = OnnxRuntime.__init__

    def gated_init(self: OnnxRuntime, model_path: Path, *args: Any, **kwargs: Any) -> None:
        build(self, model_path, *args, **kwargs)
        # <repository>/<name>/<version>/model.onnx
        if Path(model_path).parent.parent.name.startswith(GATED_PREFIX):
            run: Callable[..., Any] = self.run

            def gated_run(*run_args: Any, **run_kwargs: Any) -> Any:
                gate.pass_through()
                return run(*run_args, **run_kwargs)

            setattr(self, "run", gated_run)  # shadows the method on this instance only

    OnnxRuntime.__init__ = gated_init  # type: ignore[method-assign]


def serve_gate(gate: Gate, socket_path: Path) -> None:
    """Answer gate commands on `socket_path` from a daemon thread (one thread per connection)."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            answer = gate.command(self.rfile.readline().decode())
            self.wfile.write(answer.encode() + b"\n")

    socket_path.unlink(missing_ok=True)
    server = socketserver.ThreadingUnixStreamServer(str(socket_path), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="gate", daemon=True).start()


class GateClient:
    """The test's side of the gate. Each call is one connection, so it works from any event loop."""

    def __init__(self, socket_path: Path, timeout_s: float = 60.0) -> None:
        if len(str(socket_path)) > MAX_SOCKET_PATH:
            raise ValueError(f"Unix socket path too long ({len(str(socket_path))} chars): {socket_path}")
        self.socket_path = socket_path
        self._timeout_s = timeout_s
        self._closed = False

    async def close(self) -> None:
        await self._send("close")
        self._closed = True

    async def wait_entered(self, runs: int) -> None:
        await self._send(f"wait-entered {runs}")

    async def release(self, runs: int) -> None:
        await self._send(f"release {runs}")

    async def open(self) -> None:
        await self._send("open")
        self._closed = False

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[GateClient]:
        """Closed inside the block; opened after it unless the block opened it (a test that stops
        the server opens the gate itself first)."""
        await self.close()
        try:
            yield self
        finally:
            if self._closed:
                await self.open()

    async def _send(self, command: str) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
                try:
                    writer.write(command.encode() + b"\n")
                    await writer.drain()
                    answer = (await reader.readline()).decode().strip()
                finally:
                    writer.close()
                    await writer.wait_closed()
        except TimeoutError:
            raise AssertionError(f"gate {command!r}: no answer in {self._timeout_s} s") from None
        if answer != "ok":
            raise AssertionError(f"gate {command!r}: {answer or 'no answer'}")


class GatedServer(NamedTuple):
    """A server started through this launcher, and its gate."""

    server: ServerProcess
    gate: GateClient


def main(argv: Sequence[str]) -> int:
    socket_path, *hotserve_args = argv
    gate = Gate()
    hold_gated_runs(gate)
    serve_gate(gate, Path(socket_path))
    from server.cli import main as hotserve

    return hotserve(hotserve_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
