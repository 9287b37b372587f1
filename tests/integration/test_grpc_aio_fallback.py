"""The grpc.aio transport (`HOTSERVE_GRPC_SERVER=grpcio`), kept as a fallback to hotserve's own
HTTP/2 server: the same services answer through it with the same codes, limits and admin gate (the
other gRPC integration tests run on the default transport)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from grpc_served import (
    AUTH,
    MAX_REQUEST_BYTES,
    GrpcServer,
    expected_outputs,
    raw_request,
    serve_grpc,
    status_of,
    tab_rows,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    yield from serve_grpc(tmp_path_factory, transport="grpcio")


def test_the_grpcio_transport_serves_the_same_calls(served: GrpcServer) -> None:
    assert "grpcio transport" in served.server.log()
    features = tab_rows()
    with grpcclient.InferenceServerClient(served.address) as client:
        assert client.is_server_live() and client.is_server_ready()
        inputs = [grpcclient.InferInput("features", list(features.shape), "FP32")]
        inputs[0].set_data_from_numpy(features)
        result = client.infer("tab", inputs)
        expected = expected_outputs(served.repository, "tab", 2, {"features": features})[0]
        np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-5)
    with grpc.insecure_channel(served.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = raw_request(tab_rows(rows=2))
        request.inputs[0].datatype = "INT64"
        with pytest.raises(grpc.RpcError) as invalid:
            stub.ModelInfer(request, metadata=[("x-request-id", "fallback-1")])
        assert status_of(invalid) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "inputs.features.datatype: expected FP32, got 'INT64'",
        )
        assert dict(invalid.value.trailing_metadata())["x-request-id"] == "fallback-1"  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as too_large:
            stub.ModelInfer(raw_request(np.zeros((MAX_REQUEST_BYTES // 16 + 1, 4), dtype=np.float32)))
        assert status_of(too_large)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as no_token:
            stub.RepositoryIndex(service_pb2.RepositoryIndexRequest())
        assert status_of(no_token)[0] == grpc.StatusCode.UNAUTHENTICATED
        assert stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=list(AUTH.items())).models
