"""`tritonclient.grpc`, unchanged, against a real `hotserve serve` with `--grpc-port`: the checks
`tritonclient.http` passes in test_standard_client.py, plus routing (pinned, traffic split,
shadow), the repository RPCs behind the admin token, and hostile messages with their status codes.

Messages the client library cannot make (typed contents, contradictions) are built with Triton's
own generated messages (`tritonclient.grpc.service_pb2`) and sent on its own stub.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gated_serve import GateClient
from load_tests.server_process import ServerProcess, free_port, start_server
from onnx_models import write_gated, write_multi, write_tabular, write_version
from server.protocol.proto import inference_pb2 as hotserve_pb
from tests.grpc_messages import random_infer_request

pytestmark = pytest.mark.integration

GATED_SERVE = Path(__file__).with_name("gated_serve.py")
TOKEN = "grpc-integration-token-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_REQUEST_BYTES = 65536
SERVING, NOT_SERVING = 1, 2


class GrpcServer:
    def __init__(self, server: ServerProcess, grpc_port: int, gate: GateClient, repository: Path) -> None:
        self.server = server
        self.address = f"127.0.0.1:{grpc_port}"
        self.gate = gate
        self.repository = repository


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    """Its own repository (the repository RPCs change its control state): tab v1 + v2, multi, gated_tiny."""
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


@pytest.fixture(scope="module")
def client(served: GrpcServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(served.address) as client:
        yield client


@pytest.fixture(scope="module")
def stub(served: GrpcServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _expected(repository: Path, name: str, version: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(
        str(repository / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, feeds))


def _features(rows: int = 5, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)


def _raw_request(features: np.ndarray, **fields: Any) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="tab", **fields)
    request.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    request.raw_input_contents.append(features.tobytes())
    return request


def _status(call: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str]:
    error: Any = call.value
    return error.code(), error.details()


def test_health_and_metadata_read_by_the_grpc_client(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tab") and client.is_model_ready("tab", "2")
    assert not client.is_model_ready("tab", "1")  # in the repository, not the serving version
    assert client.get_server_metadata().name == "hotserve"
    metadata = client.get_model_metadata("tab", as_json=True)
    assert metadata["name"] == "tab" and metadata["versions"] == ["2"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]


def _health(address: str, service: str) -> int:
    """grpc.health.v1.Health/Check, as Kubernetes' gRPC probe calls it; the status number."""
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=hotserve_pb.HealthCheckRequest.SerializeToString,
            response_deserializer=hotserve_pb.HealthCheckResponse.FromString,
        )
        response: Any = check(hotserve_pb.HealthCheckRequest(service=service), timeout=30)
        return int(response.status)


def test_standard_grpc_health_check_says_live_and_ready(served: GrpcServer) -> None:
    assert _health(served.address, "") == SERVING
    assert _health(served.address, "inference.GRPCInferenceService") == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        _health(served.address, "nope")
    assert _status(unknown)[0] == grpc.StatusCode.NOT_FOUND


def test_raw_infer_matches_onnxruntime(client: grpcclient.InferenceServerClient, served: GrpcServer) -> None:
    features = _features()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    result = client.infer(
        "tab", [tensor], model_version="2", request_id="req-7", outputs=[grpcclient.InferRequestedOutput("score")]
    )
    (expected,) = _expected(served.repository, "tab", 2, {"features": features})
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-6)
    response = result.get_response()
    assert response.id == "req-7" and response.model_version == "2" and len(response.raw_output_contents) == 1


def test_typed_contents_come_back_typed(stub: service_pb2_grpc.GRPCInferenceServiceStub, served: GrpcServer) -> None:
    features = _features(rows=3)
    request = service_pb2.ModelInferRequest(model_name="tab", id="typed")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend(features.ravel().tolist())
    response = stub.ModelInfer(request)
    (expected,) = _expected(served.repository, "tab", 2, {"features": features})
    assert not response.raw_output_contents and response.id == "typed"
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("score", "FP32", [3, 1])
    np.testing.assert_allclose(np.array(output.contents.fp32_contents).reshape(3, 1), expected, rtol=1e-6)


def test_every_datatype_round_trips_in_raw_contents(
    client: grpcclient.InferenceServerClient, served: GrpcServer
) -> None:
    feeds = {
        "a": np.array([[1.5, -2.0, 3.0], [0.0, 4.0, -1.0]], dtype=np.float32),
        "b": np.array([[1, -2], [3, 2**40]], dtype=np.int64),
        "h": np.array([[0.5, 1.0], [2.0, -3.0]], dtype=np.float16),
        "c": np.array([b"caf\xc3\xa9", b"x"], dtype=object),
    }
    datatypes = {"a": "FP32", "b": "INT64", "h": "FP16", "c": "BYTES"}
    inputs = []
    for name, array in feeds.items():
        tensor = grpcclient.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("multi", inputs)
    expected = _expected(served.repository, "multi", 1, {**feeds, "c": np.array(["café", "x"], dtype=object)})
    for name, want in zip(["a_sum", "b_twice", "a_positive", "h_double"], expected, strict=False):
        np.testing.assert_array_equal(result.as_numpy(name), want)
    assert list(result.as_numpy("c_same")) == [b"caf\xc3\xa9", b"x"]


def test_int64_and_bytes_in_typed_contents_come_back_typed(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="ints")
    request.inputs.add(name="b", datatype="INT64", shape=[2, 2]).contents.int64_contents.extend([1, -2, 3, 2**40])
    request.inputs.add(name="c", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"caf\xc3\xa9", b""])
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents
    outputs = {o.name: o for o in response.outputs}
    assert (outputs["b_twice"].datatype, list(outputs["b_twice"].shape)) == ("INT64", [2, 2])
    assert list(outputs["b_twice"].contents.int64_contents) == [2, -4, 6, 2**41]
    assert list(outputs["c_same"].contents.bytes_contents) == [b"caf\xc3\xa9", b""]


def test_fp16_cannot_be_sent_in_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="multi")
    request.inputs.add(name="a", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend([1.0, 2.0, 3.0])
    request.inputs.add(name="b", datatype="INT64", shape=[1, 2]).contents.int64_contents.extend([7, -(2**40)])
    # FP16 has no typed contents field (KServe v2): only raw_input_contents can carry it
    request.inputs.add(name="h", datatype="FP16", shape=[1, 2])
    request.inputs.add(name="c", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request)
    assert _status(refused) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.h.contents: FP16 has no typed contents; send it in raw_input_contents",
    )


def test_errors_reach_the_grpc_client_as_its_exceptions(client: grpcclient.InferenceServerClient) -> None:
    wrong = grpcclient.InferInput("features", [2, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"features.shape: expected \[-1, 4\], got \[2, 3\]") as bad:
        client.infer("tab", [wrong])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="model 'nope' not found") as unknown:
        client.get_model_metadata("nope")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize(
    "change, code, message",
    [
        (
            lambda r: setattr(r.inputs[0], "datatype", "INT64"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "inputs.features.datatype: expected FP32, got 'INT64'",
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 3),
            grpc.StatusCode.INVALID_ARGUMENT,
            "raw_input_contents[0]: expected 48 bytes for FP32 shape [3, 4], got 32 bytes",
        ),
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"\x00" * 31),
            grpc.StatusCode.INVALID_ARGUMENT,
            "raw_input_contents[0]: expected 32 bytes for FP32 shape [2, 4], got 31 bytes",
        ),
        (
            lambda r: r.raw_input_contents.append(b""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "raw_input_contents: expected 1 entries, one per input, got 2 entries",
        ),
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
        (lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "model 'tab' version 9 not found"),
        (
            lambda r: r.outputs.add(name="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "outputs[0].name: expected one of ['score'], got 'nope'",
        ),
        (
            lambda r: r.parameters["timeout"].CopyFrom(service_pb2.InferParameter(string_param="soon")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameters.timeout: expected non-negative integer microseconds, got 'soon'",
        ),
    ],
)
def test_malformed_messages_get_their_status_code(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, change: Any, code: grpc.StatusCode, message: str
) -> None:
    request = _raw_request(_features(rows=2))
    change(request)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request)
    assert _status(refused) == (code, message)
    assert stub.ModelInfer(_raw_request(_features(rows=2))).outputs[0].name == "score"  # still serving


def test_typed_contents_that_contradict_the_shape_or_datatype_are_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="tab")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend([1.0] * 7)
    with pytest.raises(grpc.RpcError) as short:
        stub.ModelInfer(request)
    assert _status(short) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.features.contents.fp32_contents: expected 8 values for shape [2, 4], got 7 values",
    )
    tensor.contents.Clear()
    tensor.contents.int64_contents.extend([1] * 8)
    with pytest.raises(grpc.RpcError) as wrong_field:
        stub.ModelInfer(request)
    assert _status(wrong_field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.features.contents: expected fp32_contents for FP32, got int64_contents",
    )


def test_oversized_message_is_refused_resource_exhausted(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    rows = MAX_REQUEST_BYTES // 16 + 1  # 16 bytes a row: just over the limit
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(_raw_request(np.zeros((rows, 4), dtype=np.float32)))
    code, message = _status(refused)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(MAX_REQUEST_BYTES) in message


def test_repository_rpcs_need_the_admin_token(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_repository_index()
    assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as wrong:
        client.unload_model("tab", headers={"authorization": "Bearer not-the-token-at-all"})
    assert wrong.value.status() == "StatusCode.PERMISSION_DENIED"
    assert client.is_model_ready("tab")


def test_repository_index_load_and_unload_with_the_token(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {"name": "multi", "version": "1", "state": "READY"} in index
    assert {"name": "tab", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"} in index

    client.unload_model("multi", headers=AUTH)
    assert not client.is_model_ready("multi")
    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {"name": "multi", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    client.load_model("multi", headers=AUTH)
    assert client.is_model_ready("multi") and client.is_model_ready("multi", "1")
    with pytest.raises(InferenceServerException) as unknown:
        client.load_model("nope", headers=AUTH)
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "model 'nope' not found" in unknown.value.message()
    with pytest.raises(InferenceServerException) as override:
        client.load_model("multi", headers=AUTH, config="{}")
    assert override.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_traffic_split_pinned_versions_and_shadow_apply_to_grpc(
    client: grpcclient.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub, served: GrpcServer
) -> None:
    admin = httpx.Client(base_url=served.server.base_url, headers={"Authorization": AUTH["authorization"]}, timeout=60)
    with admin:
        assert admin.post("/admin/models/tab/versions/1/load").status_code == 200
        # With two versions loaded, unpinned requests without a split go to `production`.
        assert admin.put("/admin/models/tab/aliases/production", json={"version": 2}).status_code == 200
        assert admin.put("/admin/models/tab/traffic", json={"weights": {"1": 50, "2": 50}}).status_code == 200
        try:
            versions = {
                stub.ModelInfer(
                    _raw_request(_features(rows=1)), metadata=[("hotserve-routing-key", f"k{i}")]
                ).model_version
                for i in range(40)
            }
            assert versions == {"1", "2"}
            sticky = {
                stub.ModelInfer(
                    _raw_request(_features(rows=1)), metadata=[("hotserve-routing-key", "k7")]
                ).model_version
                for _ in range(10)
            }
            assert len(sticky) == 1
            pinned = {
                stub.ModelInfer(_raw_request(_features(rows=1), model_version="1")).model_version for _ in range(5)
            }
            assert pinned == {"1"}
        finally:
            assert admin.delete("/admin/models/tab/traffic").status_code == 200

        assert admin.put("/admin/models/tab/shadow", json={"version": 1}).status_code == 200
        try:
            for _ in range(5):
                assert stub.ModelInfer(_raw_request(_features(rows=1))).model_version == "2"
            compared = 'hotserve_shadow_requests_total{model="tab",outcome="compared",version="1"}'
            deadline = time.monotonic() + 60
            while _metric(admin, compared) < 5:  # copies run after the primary answered
                assert time.monotonic() < deadline, admin.get("/metrics").text
        finally:
            assert admin.delete("/admin/models/tab/shadow").status_code == 200
        wrong = _raw_request(_features(rows=1), model_version="2")
        wrong.inputs[0].datatype = "FP64"
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(wrong)
        metrics = admin.get("/metrics").text
    assert 'hotserve_requests_total{code="200",model="tab",protocol="grpc",version="1"}' in metrics
    assert 'hotserve_requests_total{code="400",model="tab",protocol="grpc",version="2"}' in metrics


def _metric(client: httpx.Client, sample: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_full_queue_is_resource_exhausted_and_the_call_deadline_is_honoured(served: GrpcServer) -> None:
    request = service_pb2.ModelInferRequest(model_name="gated_tiny")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1.0)
    async with grpc.aio.insecure_channel(served.address) as channel, served.gate.held(), asyncio.timeout(60):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        running = asyncio.ensure_future(stub.ModelInfer(request))
        await served.gate.wait_entered(1)  # the one worker is busy: of the next seven, one fits the queue of 1
        later = [asyncio.ensure_future(stub.ModelInfer(request)) for _ in range(7)]
        waiting = set(later)
        while len(waiting) > 1:
            _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.ModelInfer(request, timeout=0.2)  # queue full: refused at once, before its deadline
        await served.gate.open()
        answers = await asyncio.gather(running, *later, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(refused) == 6 and all(isinstance(a, service_pb2.ModelInferResponse) for a in answers if a not in refused)
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == "model 'gated_tiny' version 1 is overloaded: queue of 1 is full"
        assert dict(error.trailing_metadata() or ())["retry-after"] == "1"
    assert late.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    async with grpc.aio.insecure_channel(served.address) as channel, served.gate.held(), asyncio.timeout(60):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await stub.ModelInfer(request, timeout=0.5)
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_fuzzed_model_infer_messages_never_fail_internally(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: grpcclient.InferenceServerClient, served: GrpcServer
) -> None:
    rng = random.Random(1919)
    models = {
        "tab": [("features", "FP32", [-1, 4])],
        "multi": [("a", "FP32", [-1, 3]), ("b", "INT64", [-1, 2]), ("h", "FP16", [-1, 2]), ("c", "BYTES", [-1])],
    }
    codes: Counter[grpc.StatusCode] = Counter()
    for _ in range(400):
        try:
            stub.ModelInfer(random_infer_request(rng, service_pb2.ModelInferRequest, models), timeout=60)
            codes[grpc.StatusCode.OK] += 1
        except grpc.RpcError as error:
            codes[error.code()] += 1  # type: ignore[attr-defined]
    expected = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,  # a mutated model name or version
        grpc.StatusCode.UNAVAILABLE,  # tab version 1: in the repository, not loaded
        grpc.StatusCode.DEADLINE_EXCEEDED,  # a `timeout` parameter of a microsecond
    }
    assert set(codes) <= expected and codes[grpc.StatusCode.OK] and codes[grpc.StatusCode.INVALID_ARGUMENT], codes
    assert client.is_server_live() and client.is_server_ready()
    assert "Traceback" not in served.server.log() and "unhandled error" not in served.server.log()


async def test_sigterm_drains_grpc_calls_with_rest_ones_and_repository_rpcs_need_an_admin_api(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("grpc_drain_repository")
    write_gated(root, "gated", max_queue_size=16)
    logs = tmp_path_factory.mktemp("grpc_drain_logs")
    gate = GateClient(logs / "gate.sock")
    grpc_port = free_port()
    server = start_server(
        root,
        logs / "server.log",
        command=[sys.executable, str(GATED_SERVE), str(gate.socket_path), "serve"],
        flags=["--grpc-port", str(grpc_port)],
        env={"HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider"},
        grace_s=30.0,
    )
    request = service_pb2.ModelInferRequest(model_name="gated")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(7.0)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [7.0]}]}
    with server:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as rest,
            gate.held(),
            asyncio.timeout(60),
        ):
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as admin_off:  # no admin token configured
                await stub.RepositoryIndex(service_pb2.RepositoryIndexRequest())
            assert admin_off.value.code() == grpc.StatusCode.UNIMPLEMENTED
            held = [asyncio.ensure_future(stub.ModelInfer(request)) for _ in range(2)]
            held_rest = asyncio.ensure_future(rest.post("/v2/models/gated/infer", json=body))
            await gate.wait_entered(1)
            while _inflight(await rest.get("/metrics")) < 3:  # all three admitted
                pass
            server.process.send_signal(signal.SIGTERM)
            while (await rest.get("/v2/health/ready")).status_code != 503:
                pass
            address = f"127.0.0.1:{grpc_port}"
            assert _health(address, "inference.GRPCInferenceService") == NOT_SERVING  # readiness
            assert _health(address, "") == SERVING  # liveness: a draining pod is not restarted
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelInfer(request)
            await gate.open()
            answers = await asyncio.gather(*held)
            answered_rest = await held_rest
        assert server.process.wait(timeout=60) == 0, server.log()
    assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.UNAVAILABLE, "server is shutting down")
    assert [list(a.outputs[0].contents.fp32_contents) for a in answers] == [[7.0], [7.0]]
    assert answered_rest.status_code == 200


def _inflight(metrics: httpx.Response) -> float:
    return next(
        float(line.split()[1]) for line in metrics.text.splitlines() if line.startswith("hotserve_inflight_requests ")
    )
