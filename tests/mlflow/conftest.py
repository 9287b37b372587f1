"""The session's MLflow tracking server (tracking_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tracking_server import TrackingServer, start_tracking_server, stop


@pytest.fixture(scope="session")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    server = start_tracking_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop(server)
