"""Which inference endpoint a URL path names, and the model name and version in any path (request
path, first step): the one parser of path parameters, for both HTTP lanes and gRPC's version fields.

The inference routes are matched here rather than by FastAPI's router: `HotserveApp` sends
them down the plain-ASGI fast lane (`server/api/inference.py`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from server.contract.manifest import MODEL_NAME_PATTERN
from server.errors import InvalidInput, ModelNotFound

_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_V1_PREDICT = re.compile(r"/v1/models/([^/]+)(?:/versions/([^/]+))?:predict")
"""KServe v1 (TF Serving's REST form): `/v1/models/{m}:predict`, `/v1/models/{m}/versions/{v}:predict`."""


class InferenceTarget(NamedTuple):
    """What an inference request's path asks for: protocol, model, and an optional pinned version.
    (Built per request: a NamedTuple costs half a frozen dataclass.)"""

    protocol: str  # "v1" | "v2"
    name: str
    version: str | None


_TARGETS: dict[str, InferenceTarget] = {}
_MAX_TARGETS = 1024
"""Inference paths already matched (a few per served model): a dict lookup instead of the regular
expressions (0.05 against 1.7 us). Bounded: clients choose paths."""


def match_inference_path(path: str) -> InferenceTarget | None:
    """The inference endpoint a path is for, or None (FastAPI handles everything else)."""
    target = _TARGETS.get(path)
    if target is not None:
        return target
    if m := _V2_INFER.fullmatch(path):
        target = InferenceTarget("v2", m.group(1), m.group(2))
    elif m := _V1_PREDICT.fullmatch(path):
        target = InferenceTarget("v1", m.group(1), m.group(2))
    else:
        return None
    if len(_TARGETS) >= _MAX_TARGETS:
        _TARGETS.clear()
    _TARGETS[path] = target
    return target


_VERSION_NUMBER = re.compile(r"[0-9]{1,18}")
"""A version as a URL, a gRPC field or the CLI writes it: ASCII digits (`str.isdigit` also takes
"¹" and "٣", which `int` refuses or reads as another number), at most 18 of them (an int64; longer
strings are refused before `int` pays for them)."""


_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
MAX_MODEL_NAME_LENGTH = 255
"""A model is a folder of the repository: a name longer than a file name may be (255 bytes on
Linux, macOS and Windows; the pattern is ASCII) names none, and would fail a path lookup."""


def parse_model_name(name: str) -> str:
    """The model a path names; `ModelNotFound` (404, Triton's answer for any name it does not
    serve) when it cannot name one: the repository scan skips folders outside the model-name
    pattern, so such a name reaches no lookup, audit entry or log field."""
    if name in _NAMES:
        return name
    if len(name) > MAX_MODEL_NAME_LENGTH or _MODEL_NAME.fullmatch(name) is None:
        raise ModelNotFound(name if len(name) <= 80 else name[:80] + "...")
    if len(_NAMES) >= _MAX_TARGETS:
        _NAMES.clear()
    _NAMES.add(name)
    return name


_NAMES: set[str] = set()
"""Model names already found well formed (bounded like `_TARGETS`)."""


def parse_version(name: str, version: str) -> int:
    """The version number a request names: the one parser of every version string a client sends
    (REST path parameters in both lanes, admin and drift routes, gRPC `model_version`).

    Malformed (anything but 1-18 ASCII digits): `InvalidInput`, 400 / INVALID_ARGUMENT, as Triton
    answers a version outside its `[0-9]+` route pattern, and TF Serving its `\\d+`. Well formed
    but not a version (0): `ModelNotFound`, 404, like any version the repository does not hold.
    """
    number = _VERSIONS.get(version)
    if number is not None:
        return number
    if _VERSION_NUMBER.fullmatch(version) is None:
        shown = version if len(version) <= 40 else version[:40] + "..."
        raise InvalidInput("version", expected="a version number (a positive integer, ASCII digits)", got=repr(shown))
    number = int(version)
    if number < 1:
        raise ModelNotFound(name, version)
    if len(_VERSIONS) >= _MAX_TARGETS:
        _VERSIONS.clear()
    _VERSIONS[version] = number
    return number


_VERSIONS: dict[str, int] = {}
"""Version strings already parsed to a number of at least 1 (bounded like `_TARGETS`)."""
