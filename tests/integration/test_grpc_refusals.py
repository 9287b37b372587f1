"""Malformed and hostile gRPC messages against a real `hotserve serve`: each gets its status code and
a message naming the field, never an internal error (a fuzz of generated ModelInferRequests
included); a full queue, the call's own deadline, and SIGTERM draining gRPC calls with REST ones.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gated_serve import GateClient
from grpc_served import (
    GATED_SERVE,
    MAX_REQUEST_BYTES,
    NOT_SERVING,
    SERVING,
    GrpcServer,
    health,
    inflight,
    raw_request,
    serve_grpc,
    status_of,
    tab_rows,
)
from load_tests.server_process import free_port, start_server
from onnx_models import write_gated
from tests.grpc_messages import random_infer_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    yield from serve_grpc(tmp_path_factory)


@pytest.fixture(scope="module")
def client(served: GrpcServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(served.address) as client:
        yield client


@pytest.fixture(scope="module")
def stub(served: GrpcServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


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
    request = raw_request(tab_rows(rows=2))
    change(request)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request)
    assert status_of(refused) == (code, message)
    assert stub.ModelInfer(raw_request(tab_rows(rows=2))).outputs[0].name == "score"  # still serving


def test_typed_contents_that_contradict_the_shape_or_datatype_are_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="tab")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend([1.0] * 7)
    with pytest.raises(grpc.RpcError) as short:
        stub.ModelInfer(request)
    assert status_of(short) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.features.contents.fp32_contents: expected 8 values for shape [2, 4], got 7 values",
    )
    tensor.contents.Clear()
    tensor.contents.int64_contents.extend([1] * 8)
    with pytest.raises(grpc.RpcError) as wrong_field:
        stub.ModelInfer(request)
    assert status_of(wrong_field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.features.contents: expected fp32_contents for FP32, got int64_contents",
    )


def test_oversized_message_is_refused_resource_exhausted(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    rows = MAX_REQUEST_BYTES // 16 + 1  # 16 bytes a row: just over the limit
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(raw_request(np.zeros((rows, 4), dtype=np.float32)))
    code, message = status_of(refused)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(MAX_REQUEST_BYTES) in message


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
            # queue full: refused, not queued (a queued call would wait on the held gate until its
            # deadline); the deadline is a hang guard, long enough for any load on this machine
            await stub.ModelInfer(request, timeout=30)
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
            while inflight(await rest.get("/metrics")) < 3:  # all three admitted
                pass
            server.process.send_signal(signal.SIGTERM)
            while (await rest.get("/v2/health/ready")).status_code != 503:
                pass
            address = f"127.0.0.1:{grpc_port}"
            assert health(address, "inference.GRPCInferenceService") == NOT_SERVING  # readiness
            assert health(address, "") == SERVING  # liveness: a draining pod is not restarted
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelInfer(request)
            await gate.open()
            answers = await asyncio.gather(*held)
            answered_rest = await held_rest
        assert server.process.wait(timeout=60) == 0, server.log()
    assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.UNAVAILABLE, "server is shutting down")
    assert [list(a.outputs[0].contents.fp32_contents) for a in answers] == [[7.0], [7.0]]
    assert answered_rest.status_code == 200
