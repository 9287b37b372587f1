"""`tritonclient.grpc`, unchanged, against a real `hotserve serve` with `--grpc-port`: the checks
`tritonclient.http` passes in test_standard_client.py (health, metadata, infer raw and typed, FP32,
INT64 and multi-input models, the repository RPCs with and without the admin token), and routing
(pinned versions, traffic split, shadow) applied to gRPC requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from grpc_served import (
    AUTH,
    SERVING,
    GrpcServer,
    expected_outputs,
    health,
    metric,
    raw_request,
    serve_grpc,
    status_of,
    tab_rows,
)

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


def test_health_and_metadata_read_by_the_grpc_client(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tab") and client.is_model_ready("tab", "2")
    assert not client.is_model_ready("tab", "1")  # in the repository, not the serving version
    assert client.get_server_metadata().name == "hotserve"
    metadata = client.get_model_metadata("tab", as_json=True)
    assert metadata["name"] == "tab" and metadata["versions"] == ["2"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]


def test_standard_grpc_health_check_says_live_and_ready(served: GrpcServer) -> None:
    assert health(served.address, "") == SERVING
    assert health(served.address, "inference.GRPCInferenceService") == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        health(served.address, "nope")
    assert status_of(unknown)[0] == grpc.StatusCode.NOT_FOUND


def test_raw_infer_matches_onnxruntime(client: grpcclient.InferenceServerClient, served: GrpcServer) -> None:
    features = tab_rows()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    result = client.infer(
        "tab", [tensor], model_version="2", request_id="req-7", outputs=[grpcclient.InferRequestedOutput("score")]
    )
    (expected,) = expected_outputs(served.repository, "tab", 2, {"features": features})
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-6)
    response = result.get_response()
    assert response.id == "req-7" and response.model_version == "2" and len(response.raw_output_contents) == 1


def test_typed_contents_come_back_typed(stub: service_pb2_grpc.GRPCInferenceServiceStub, served: GrpcServer) -> None:
    features = tab_rows(rows=3)
    request = service_pb2.ModelInferRequest(model_name="tab", id="typed")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend(features.ravel().tolist())
    response = stub.ModelInfer(request)
    (expected,) = expected_outputs(served.repository, "tab", 2, {"features": features})
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
    expected = expected_outputs(served.repository, "multi", 1, {**feeds, "c": np.array(["café", "x"], dtype=object)})
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
    assert status_of(refused) == (
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
                    raw_request(tab_rows(rows=1)), metadata=[("hotserve-routing-key", f"k{i}")]
                ).model_version
                for i in range(40)
            }
            assert versions == {"1", "2"}
            sticky = {
                stub.ModelInfer(raw_request(tab_rows(rows=1)), metadata=[("hotserve-routing-key", "k7")]).model_version
                for _ in range(10)
            }
            assert len(sticky) == 1
            pinned = {stub.ModelInfer(raw_request(tab_rows(rows=1), model_version="1")).model_version for _ in range(5)}
            assert pinned == {"1"}
        finally:
            assert admin.delete("/admin/models/tab/traffic").status_code == 200

        assert admin.put("/admin/models/tab/shadow", json={"version": 1}).status_code == 200
        try:
            for _ in range(5):
                assert stub.ModelInfer(raw_request(tab_rows(rows=1))).model_version == "2"
            compared = 'hotserve_shadow_requests_total{model="tab",outcome="compared",version="1"}'
            deadline = time.monotonic() + 60
            while metric(admin, compared) < 5:  # copies run after the primary answered
                assert time.monotonic() < deadline, admin.get("/metrics").text
        finally:
            assert admin.delete("/admin/models/tab/shadow").status_code == 200
        wrong = raw_request(tab_rows(rows=1), model_version="2")
        wrong.inputs[0].datatype = "FP64"
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(wrong)
        metrics = admin.get("/metrics").text
    assert 'hotserve_requests_total{code="200",model="tab",protocol="grpc",version="1"}' in metrics
    assert 'hotserve_requests_total{code="400",model="tab",protocol="grpc",version="2"}' in metrics
