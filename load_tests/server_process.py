"""The one launcher of a real `hotserve serve` process, for the integration tests, the image test and
the benchmark: a free 127.0.0.1 port, readiness polled over HTTP, stopped by its own PID.

The server sees only the configuration given here: inherited `HOTSERVE_*` variables and
`PYTHONPATH` are dropped, so a developer's shell cannot change what a test or a benchmark runs.
The default command is this checkout's `python -m server.cli serve` (with the checkout on
`PYTHONPATH`), not the `hotserve` entry point, which may belong to another checkout's install:
a benchmark run from a worktree measures that worktree's code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVE = (sys.executable, "-m", "server.cli", "serve")
"""This checkout's `hotserve serve`."""
STARTUP_TIMEOUT_S = 90.0
STOP_MARGIN_S = 30.0
"""How long `stop()` waits beyond the shutdown grace before it kills."""


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A started server: where it listens, its log, and how to stop it. A context manager that stops
    it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path, stop_timeout_s: float) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._stop_timeout_s = stop_timeout_s

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL only if it will not exit. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)

    def answers(self, path: str) -> bool:
        """True when `path` answers 200 right now."""
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(self.base_url + path, timeout=1.0) as response:
                return bool(response.status == 200)
        return False

    def wait_ready(self, path: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Return once `path` answers 200; RuntimeError (with the log) if the process exits first or
        the time runs out."""
        deadline = time.monotonic() + timeout_s
        while not self.answers(path):
            if self.process.poll() is not None:
                raise RuntimeError(f"hotserve serve exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"hotserve serve: {path} not ready after {timeout_s} s:\n{self.log()}")
            time.sleep(0.1)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def start_server(
    repository: Path,
    log_path: Path,
    *,
    ready_path: str | None = "/v2/health/ready",
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    grace_s: float | None = None,
    command: Sequence[str] = SERVE,
    from_checkout: bool = True,
    cwd: Path | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> ServerProcess:
    """Start a server on `repository`, listening on a free 127.0.0.1 port, its output in `log_path`.

    Repository, host and port go in as `HOTSERVE_*` variables, as in the container image, so any
    command that reads the settings (`hotserve serve`, a wrapper around it) starts the same way.
    `flags` are appended to the command; `env` adds variables; `grace_s` sets the shutdown grace.
    `command` replaces `python -m server.cli serve`; `from_checkout` puts this checkout on its
    `PYTHONPATH` (False for an installed server, as the image test runs).
    With `ready_path` set, returns once it answers 200 (the process is stopped if it never does);
    with None, returns at once.
    """
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_") and k != "PYTHONPATH"}
    settings = {"HOTSERVE_MODEL_REPOSITORY": str(repository), "HOTSERVE_HOST": "127.0.0.1", "HOTSERVE_PORT": str(port)}
    if grace_s is not None:
        settings["HOTSERVE_SHUTDOWN_GRACE_S"] = str(grace_s)
    if from_checkout:
        inherited["PYTHONPATH"] = str(REPO_ROOT)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, *flags],
            cwd=cwd or REPO_ROOT,
            env={**inherited, **settings, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    grace = 30.0 if grace_s is None else grace_s  # 30 s: the settings' default
    server = ServerProcess(process, port, log_path, stop_timeout_s=grace + STOP_MARGIN_S)
    if ready_path is not None:
        try:
            server.wait_ready(ready_path, startup_timeout_s)
        except BaseException:
            server.stop()
            raise
    return server
