"""`HOTSERVE_METRICS_PORT`: /metrics on a listener of its own, and no longer on the main port."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from load_tests.server_process import free_port, start_server
from onnx_models import write_tabular

pytestmark = pytest.mark.integration


def test_metrics_move_to_their_own_port(tmp_path: Path) -> None:
    write_tabular(tmp_path / "repository", 1)
    metrics_port = free_port()
    env = {"HOTSERVE_METRICS_PORT": str(metrics_port), "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider"}
    with start_server(tmp_path / "repository", tmp_path / "server.log", env=env) as server:
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200 and "hotserve_control_revision" in scraped.text
        assert httpx.get(server.base_url + "/metrics", timeout=10).status_code == 404
        assert httpx.get(server.base_url + "/v2/health/ready", timeout=10).status_code == 200
