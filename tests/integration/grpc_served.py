"""What the gRPC integration tests share: a real `hotserve serve` with `--grpc-port` (the test gate
holds its `gated*` models), the models it serves, and helpers to build and read messages.

Messages the client library cannot make (typed contents, contradictions) are built with Triton's
own generated messages (`tritonclient.grpc.service_pb2`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import service_pb2

from gated_serve import GateClient
from load_tests.server_process import ServerProcess, free_port, start_server
from onnx_models import write_gated, write_multi, write_tabular, write_version
from server.protocol.proto import inference_pb2 as hotserve_pb

GATED_SERVE = Path(__file__).with_name("gated_serve.py")
TOKEN = "grpc-integration-token-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_REQUEST_BYTES = 65536
SERVING, NOT_SERVING = 1, 2


class GrpcServer:
    """A started server: its process, gRPC address, gate and repository."""

    def __init__(self, server: ServerProcess, grpc_port: int, gate: GateClient, repository: Path) -> None:
        self.server = server
        self.address = f"127.0.0.1:{grpc_port}"
        self.gate = gate
        self.repository = repository


def serve_grpc(tmp_path_factory: pytest.TempPathFactory, transport: str = "hotserve") -> Iterator[GrpcServer]:
    """A server over its own repository (the repository RPCs change its control state): tab v1 + v2,
    multi, ints, gated_tiny; stopped (and its exit code checked) when the generator closes.
    `transport`: HOTSERVE_GRPC_SERVER (hotserve's own HTTP/2 server, or grpcio's)."""
    root = tmp_path_factory.mktemp("grpc_repository")
    write_tabular(root, 1)
    write_tabular(root, 2)
    write_multi(root)
    write_ints(root)
    write_gated(root, "gated_tiny", max_queue_size=1)
    logs = tmp_path_factory.mktemp("grpc_logs")
    gate = GateClient(logs / "gate.sock")
    grpc_port = free_port()
    server = start_server(
        root,
        logs / "server.log",
        command=[sys.executable, str(GATED_SERVE), str(gate.socket_path), "serve"],
        flags=["--max-request-bytes", str(MAX_REQUEST_BYTES), "--grpc-port", str(grpc_port)],
        env={
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
            "HOTSERVE_ADMIN_TOKEN": TOKEN,
            "HOTSERVE_GRPC_SERVER": transport,
        },
    )
    yield GrpcServer(server, grpc_port, gate, root)
    assert server.stop() == 0, server.log()


def write_ints(repository: Path) -> None:
    """`ints`: INT64 and BYTES only (every input has a typed contents field): b * 2, c as is."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["b", "two"], ["b_twice"]), helper.make_node("Identity", ["c"], ["c_same"])],
        "ints",
        [
            helper.make_tensor_value_info("b", TensorProto.INT64, ["n", 2]),
            helper.make_tensor_value_info("c", TensorProto.STRING, ["n"]),
        ],
        [
            helper.make_tensor_value_info("b_twice", TensorProto.INT64, ["n", 2]),
            helper.make_tensor_value_info("c_same", TensorProto.STRING, ["n"]),
        ],
        [numpy_helper.from_array(np.array(2, dtype=np.int64), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    write_version(
        repository,
        "ints",
        1,
        model,
        [("b", "INT64", [-1, 2]), ("c", "BYTES", [-1])],
        [("b_twice", "INT64", [-1, 2]), ("c_same", "BYTES", [-1])],
    )


def expected_outputs(repository: Path, name: str, version: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """What onnxruntime answers for `feeds` on that version's model, in output order."""
    session = ort.InferenceSession(
        str(repository / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, feeds))


def tab_rows(rows: int = 5, seed: int = 3) -> np.ndarray:
    """Rows for `tab` (FP32 [n, 4])."""
    return np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)


def raw_request(features: np.ndarray, **fields: Any) -> service_pb2.ModelInferRequest:
    """A ModelInferRequest for `tab` with its rows in raw_input_contents, as tritonclient.grpc sends."""
    request = service_pb2.ModelInferRequest(model_name="tab", **fields)
    request.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    request.raw_input_contents.append(features.tobytes())
    return request


def status_of(call: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str]:
    """The code and message a refused call ended with."""
    error: Any = call.value
    return error.code(), error.details()


def health(address: str, service: str) -> int:
    """grpc.health.v1.Health/Check, as Kubernetes' gRPC probe calls it; the status number."""
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=hotserve_pb.HealthCheckRequest.SerializeToString,
            response_deserializer=hotserve_pb.HealthCheckResponse.FromString,
        )
        response: Any = check(hotserve_pb.HealthCheckRequest(service=service), timeout=30)
        return int(response.status)


def metric(client: httpx.Client, sample: str) -> float:
    """The value of one sample line of `/metrics` (0 when absent)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def inflight(metrics: httpx.Response) -> float:
    """`hotserve_inflight_requests` in a `/metrics` answer."""
    return next(
        float(line.split()[1]) for line in metrics.text.splitlines() if line.startswith("hotserve_inflight_requests ")
    )
