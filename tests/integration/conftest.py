"""Integration fixtures: a repository of tiny ONNX models and the `hotserve serve` processes over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onnx_models import write_corrupt, write_multi, write_slow, write_tabular
from server_process import ServerProcess, start_server


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tab v1 + v2 (feature spec), multi (five dtypes), slow_tiny (queue of one)."""
    root = tmp_path_factory.mktemp("repository")
    write_tabular(root, 1)
    write_tabular(root, 2)
    write_multi(root)
    write_slow(root, "slow_tiny", max_queue_size=1, matmuls=24)  # ~0.25 s a run
    return root


@pytest.fixture(scope="session")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(repository, tmp_path_factory.mktemp("logs") / "server.log", "/v2/health/ready")
    yield process
    code = process.stop()
    assert code == 0, process.log()


@pytest.fixture(scope="module")
def draining_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a slow model and a corrupt one (so the server as a whole never turns ready)."""
    root = tmp_path_factory.mktemp("drain_repository")
    write_slow(root, "slow", max_queue_size=16, matmuls=48)  # ~0.5 s a run
    write_corrupt(root, "broken")
    process = start_server(root, tmp_path_factory.mktemp("logs") / "drain.log", "/v2/models/slow/ready")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def serve_with(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Starts `hotserve serve` over a repository with extra `HOTSERVE_*` variables; stops them after the module."""
    started: list[ServerProcess] = []

    def start(repository: Path, env: dict[str, str], ready_path: str = "/v2/health/ready") -> ServerProcess:
        with pytest.MonkeyPatch.context() as patch:  # start_server passes its environment on
            for name, value in env.items():
                patch.setenv(name, value)
            process = start_server(repository, tmp_path_factory.mktemp("logs") / "server.log", ready_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
