"""Which inference endpoint a URL path names, and the version in it (request path, first step).

The inference routes are matched here rather than by FastAPI's router: `HotserveApp` sends
them down the plain-ASGI fast lane (`server/api/inference.py`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from server.errors import ModelNotFound

_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_V1_PREDICT = re.compile(r"/v1/models/([^/]+)(?:/versions/([^/]+))?:predict")
"""KServe v1 (TF Serving's REST form): `/v1/models/{m}:predict`, `/v1/models/{m}/versions/{v}:predict`."""


class InferenceTarget(NamedTuple):
    """What an inference request's path asks for: protocol, model, and an optional pinned version.
    (Built per request: a NamedTuple costs half a frozen dataclass.)"""

    protocol: str  # "v1" | "v2"
    name: str
    version: str | None


def match_inference_path(path: str) -> InferenceTarget | None:
    """The inference endpoint a path is for, or None (FastAPI handles everything else)."""
    if m := _V2_INFER.fullmatch(path):
        return InferenceTarget("v2", m.group(1), m.group(2))
    if m := _V1_PREDICT.fullmatch(path):
        return InferenceTarget("v1", m.group(1), m.group(2))
    return None


def parse_version(name: str, version: str) -> int:
    """Versions are positive integers; anything else cannot exist (404)."""
    if not version.isdigit() or int(version) < 1:
        raise ModelNotFound(name, version)
    return int(version)
