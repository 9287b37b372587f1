"""A real `hotserve serve` subprocess on a free 127.0.0.1 port, waited on through its health
endpoints and stopped by its own PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL only if it will not exit. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)


def start_server(repository: Path, log_path: Path, ready_path: str, grace_s: float = 30.0,
                 env: Mapping[str, str] | None = None) -> ServerProcess:
    """Start `hotserve serve` and return once `ready_path` answers 200; `env` adds variables."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_")}
    env = {**inherited, "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
           "HOTSERVE_INTRA_OP_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    command = [sys.executable, "-m", "server.cli", "serve", "--model-repository", str(repository),
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
               "--max-request-bytes", "65536", "--shutdown-grace-s", str(grace_s)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hotserve serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + ready_path, timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"hotserve serve not ready after {STARTUP_TIMEOUT_S} s:\n{server.log()}")
