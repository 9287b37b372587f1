"""Memory comes back: 20 load/unload cycles of a 16 MiB version through the admin API leave the
server's RSS within 10% of where it started (the figures are printed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from load_tests.server_process import ServerProcess, start_server
from onnx_models import OPSET, write_version
from server.contract.manifest import BatchingPolicy

pytestmark = pytest.mark.integration

TOKEN = "memory-test-admin-token-01"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WIDTH = 2048  # one WIDTH x WIDTH FP32 weight: 16 MiB
CYCLES = 20


def wide_model(seed: int) -> onnx.ModelProto:
    weight = np.random.default_rng(seed).normal(size=(WIDTH, WIDTH)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("memory_repository")
    for version in (1, 2):
        write_version(
            root,
            "wide",
            version,
            wide_model(version),
            [("x", "FP32", [-1, WIDTH])],
            [("y", "FP32", [-1, WIDTH])],
            BatchingPolicy(max_batch_size=8),
        )
    (root / ".hotserve").mkdir()
    (root / ".hotserve" / "control.json").write_text('{"models": {"wide": {"aliases": {"production": 1}}}}')
    server = start_server(
        root,
        tmp_path_factory.mktemp("logs") / "memory.log",
        ready_path="/v2/health/ready",
        env={"HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}"},
    )
    yield server
    assert server.stop() == 0, server.log()


def rss_mib(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def test_twenty_load_unload_cycles_give_the_memory_back(memory_server: ServerProcess) -> None:
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, WIDTH], "data": [0.5] * WIDTH}]}
    with httpx.Client(base_url=memory_server.base_url, headers=AUTH, timeout=120) as client:
        assert client.post("/v2/models/wide/infer", json=x).status_code == 200
        start = rss_mib(memory_server)
        loaded, after = [], []
        costs = set()
        for _ in range(CYCLES):
            response = client.post("/admin/models/wide/versions/2/load")
            assert response.status_code == 200, response.text
            (v2,) = [v for v in response.json()["model"]["versions"] if v["version"] == 2]
            costs.add(v2["memory_bytes"])
            assert client.post("/v2/models/wide/versions/2/infer", json=x).status_code == 200
            loaded.append(rss_mib(memory_server))
            response = client.post("/admin/models/wide/versions/2/unload")
            assert response.status_code == 200, response.text
            assert response.json()["model"]["versions"][1]["state"] == "UNLOADED"
            after.append(rss_mib(memory_server))
    growth = (after[-1] - start) / start
    print(
        f"\nRSS MiB: start {start:.1f}; loaded {', '.join(f'{v:.0f}' for v in loaded)}; "
        f"after unload {', '.join(f'{v:.0f}' for v in after)}; end {after[-1]:.1f} ({growth:+.1%}); "
        f"v2 memory cost reported {sorted(round(c / 2**20, 1) for c in costs)} MiB"
    )
    assert abs(growth) <= 0.10
    # Each load's reported cost is at least the weights it holds (16 MiB), and not wildly more.
    assert all(16 * 2**20 <= cost <= 4 * 16 * 2**20 for cost in costs), costs
