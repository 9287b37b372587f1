"""A real MLflow tracking server for the MLflow interop tests: `mlflow server` from `.venv-mlflow`
(scripts/mlflow-server-env.sh) with a SQLite backend and a local artifact store, on a free
127.0.0.1 port, started once per session and stopped by its own PID."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from load_tests.server_process import REPO_ROOT, free_port

MLFLOW_VENV = Path(os.environ.get("HOTSERVE_MLFLOW_VENV", REPO_ROOT / ".venv-mlflow"))
STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class TrackingServer:
    uri: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_tracking_server(root: Path) -> TrackingServer:
    executable = MLFLOW_VENV / "bin" / "mlflow"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: run scripts/mlflow-server-env.sh (scripts/test.sh does)")
    port = free_port()
    log_path = root / "mlflow-server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(executable), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=root, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = TrackingServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _healthy(server.uri):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(server)
            pytest.fail(f"mlflow server did not become healthy:\n{server.log()}")
        time.sleep(0.2)  # polling a process's readiness, not synchronising with it
    return server


def stop(server: TrackingServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)
