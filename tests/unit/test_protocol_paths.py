"""Which inference endpoint a path names: v2 infer and v1 :predict, each optionally pinned."""

from __future__ import annotations

import pytest

from server.errors import ModelNotFound
from server.protocol.paths import InferenceTarget, match_inference_path, parse_version


@pytest.mark.parametrize(
    "path, target",
    [
        ("/v2/models/m/infer", InferenceTarget("v2", "m", None)),
        ("/v2/models/m/versions/3/infer", InferenceTarget("v2", "m", "3")),
        ("/v1/models/m:predict", InferenceTarget("v1", "m", None)),
        ("/v1/models/m/versions/3:predict", InferenceTarget("v1", "m", "3")),  # KServe v1 / TF Serving form
        ("/v1/models/m/versions/latest:predict", InferenceTarget("v1", "m", "latest")),  # refused 404 later
        ("/v1/models/m/versions/:predict", None),
        ("/v1/models/m/versions/3/extra:predict", None),
        ("/v2/models/m", None),
        ("/v1/models/m:explain", None),
    ],
)
def test_inference_paths_name_protocol_model_and_pinned_version(path: str, target: InferenceTarget | None) -> None:
    assert match_inference_path(path) == target


def test_versions_are_positive_integers_or_not_found() -> None:
    assert parse_version("m", "12") == 12
    for bad in ("0", "-1", "latest", "1.5"):
        with pytest.raises(ModelNotFound, match=f"model 'm' version {bad} not found"):
            parse_version("m", bad)
