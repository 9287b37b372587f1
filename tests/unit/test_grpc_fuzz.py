"""Fuzz: the gRPC decoder on generated ModelInferRequests answers InvalidInput or a valid request, nothing else."""

from __future__ import annotations

import random

import numpy as np

from server.contract.manifest import FeatureSpec
from server.errors import InvalidInput
from server.protocol.grpc_codec import decode_model_infer
from server.protocol.proto import inference_pb2 as pb
from server.protocol.schema import ModelSchema
from tests.fakes import make_manifest
from tests.grpc_messages import Inputs, random_infer_request

MODELS: dict[str, Inputs] = {
    "tab": [("features", "FP32", [-1, 4])],
    "typed": [("x", "FP64", [-1]), ("n", "INT64", [-1, 2]), ("s", "BYTES", [-1])],
    "multi": [("a", "FP32", [-1, 3]), ("b", "INT64", [-1, 2]), ("h", "FP16", [-1, 2]), ("c", "BYTES", [-1])],
}
TAB_FEATURES = FeatureSpec(input="features", columns=list("abcd"), request_features=list("abcd"))  # finite only
SCHEMAS = {
    name: ModelSchema.from_manifest(
        make_manifest(name, inputs, [("score", "FP32", [-1, 1])], features=TAB_FEATURES if name == "tab" else None)
    )
    for name, inputs in MODELS.items()
}
MESSAGES = 3000


def test_generated_requests_decode_or_are_refused_with_invalid_input() -> None:
    rng = random.Random(19)
    decoded = refused = 0
    for _ in range(MESSAGES):
        request = random_infer_request(rng, pb.ModelInferRequest, MODELS)
        schema = SCHEMAS.get(request.model_name, SCHEMAS["tab"])
        wire = pb.ModelInferRequest.FromString(request.SerializeToString())  # as the server receives it
        try:
            result = decode_model_infer(wire, schema)
        except InvalidInput as error:
            assert error.message and error.field, error
            refused += 1
            continue
        decoded += 1
        assert set(result.inputs) == set(schema.inputs)
        for name, tensor in result.inputs.items():
            spec = schema.inputs[name]
            assert tensor.dtype == spec.dtype and tensor.shape[0] == result.rows
            if spec.finite:
                assert np.isfinite(tensor).all()
    assert decoded > MESSAGES / 10 and refused > MESSAGES / 2, (decoded, refused)
