"""Integration fixtures: a repository of tiny ONNX models and the `hotserve serve` processes over it.

Both servers start through `gated_serve.py`: the real server, with the runs of `gated*` models
held at a gate the tests work (`GateClient`); every other model runs untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gated_serve import GateClient, GatedServer
from load_tests.server_process import ServerProcess, start_server
from onnx_models import write_corrupt, write_gated, write_multi, write_tabular

GATED_SERVE = Path(__file__).with_name("gated_serve.py")


def start_gated_server(repository: Path, log_dir: Path, ready_path: str) -> GatedServer:
    """`hotserve serve` on `repository` (CPU, one intra-op thread, 64 KiB bodies, 30 s grace), ready."""
    gate = GateClient(log_dir / "gate.sock")
    server = start_server(
        repository,
        log_dir / "server.log",
        ready_path=ready_path,
        command=[sys.executable, str(GATED_SERVE), str(gate.socket_path), "serve"],
        flags=["--log-level", "info", "--max-request-bytes", "65536"],
        grace_s=30.0,
        env={"HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider", "HOTSERVE_INTRA_OP_THREADS": "1"},
    )
    return GatedServer(server, gate)


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tab v1 + v2 (feature spec), multi (five dtypes), gated_tiny (queue of one)."""
    root = tmp_path_factory.mktemp("repository")
    write_tabular(root, 1)
    write_tabular(root, 2)
    write_multi(root)
    write_gated(root, "gated_tiny", max_queue_size=1)
    return root


@pytest.fixture(scope="session")
def served(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatedServer]:
    served = start_gated_server(repository, tmp_path_factory.mktemp("logs"), "/v2/health/ready")
    yield served
    code = served.server.stop()
    assert code == 0, served.server.log()


@pytest.fixture(scope="session")
def server(served: GatedServer) -> ServerProcess:
    return served.server


@pytest.fixture(scope="session")
def gate(served: GatedServer) -> GateClient:
    """The gate of `server`'s gated models."""
    return served.gate


@pytest.fixture(scope="module")
def draining(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatedServer]:
    """A server with a gated model and a corrupt one (so the server as a whole never turns ready)."""
    root = tmp_path_factory.mktemp("drain_repository")
    write_gated(root, "gated", max_queue_size=16)
    write_corrupt(root, "broken")
    served = start_gated_server(root, tmp_path_factory.mktemp("drain_logs"), "/v2/models/gated/ready")
    yield served
    served.server.stop()


@pytest.fixture(scope="module")
def serve_with(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Starts `hotserve serve` over a repository with extra `HOTSERVE_*` variables; stops them after the module."""
    started: list[ServerProcess] = []

    def start(repository: Path, env: dict[str, str], ready_path: str = "/v2/health/ready") -> ServerProcess:
        process = start_server(
            repository, tmp_path_factory.mktemp("logs") / "server.log", ready_path=ready_path, env=env
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
