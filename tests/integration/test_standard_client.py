"""A standard Open Inference Protocol client, unchanged, against a real `hotserve serve` process.

`tritonclient.http` is the reference KServe v2 / Triton HTTP client: it speaks the binary
tensor data extension on its own, so these tests prove wire compatibility, not just our
reading of the spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from load_tests.server_process import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.base_url.removeprefix("http://"))


def _expected(repository: Path, name: str, version: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(
        str(repository / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, feeds))


def test_health_and_metadata_read_by_a_standard_client(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tab") and client.is_model_ready("tab", "2")
    assert not client.is_model_ready("tab", "1")  # in the repository, not the serving version
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("tab")
    assert metadata["name"] == "tab"
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.mark.parametrize("binary_in, binary_out", [(False, False), (True, False), (True, True), (False, True)])
def test_infer_matches_onnxruntime_in_json_and_binary(
    client: httpclient.InferenceServerClient, repository: Path, binary_in: bool, binary_out: bool
) -> None:
    features = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    tensor = httpclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features, binary_data=binary_in)
    result = client.infer(
        "tab",
        [tensor],
        model_version="2",
        request_id="req-7",
        outputs=[httpclient.InferRequestedOutput("score", binary_data=binary_out)],
    )
    (expected,) = _expected(repository, "tab", 2, {"features": features})
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-6)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_version"] == "2"


def test_every_datatype_round_trips_through_the_binary_extension(
    client: httpclient.InferenceServerClient, repository: Path
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
        tensor = httpclient.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    result = client.infer("multi", inputs)
    expected = _expected(repository, "multi", 1, {**feeds, "c": np.array(["café", "x"], dtype=object)})
    for name, want in zip(["a_sum", "b_twice", "a_positive", "h_double"], expected, strict=False):
        np.testing.assert_array_equal(result.as_numpy(name), want)
    assert list(result.as_numpy("c_same")) == [b"caf\xc3\xa9", b"x"]


def test_errors_reach_a_standard_client_as_its_exceptions(client: httpclient.InferenceServerClient) -> None:
    wrong = httpclient.InferInput("features", [2, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match=r"features.shape: expected \[-1, 4\], got \[2, 3\]"):
        client.infer("tab", [wrong])
    with pytest.raises(InferenceServerException, match="model 'nope' not found"):
        client.get_model_metadata("nope")
