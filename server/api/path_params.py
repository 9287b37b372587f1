"""The path parameters of FastAPI's routes, parsed once: `{name}` and `{version}` (HTTP edge).

Every route with a model name or version in its path declares them through these aliases, so
they are parsed the one way `server/protocol/paths.py` defines (which the inference fast lane and
gRPC call directly): a version that is not a number of ASCII digits is 400 `{"error": "version:
..."}`, a name no model can have and version 0 are 404, before a route's own code runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from server.protocol.paths import parse_model_name, parse_version

_NAME = "A model name as in the repository: letters, digits, `_`, `.`, `-`, not starting with `_.-`."
_VERSION = "A version number: a positive integer in ASCII digits (400 otherwise; 404 when not in the repository)."


def _model_name(name: Annotated[str, Path(description=_NAME)]) -> str:
    return parse_model_name(name)


def _version(name: Annotated[str, Path(description=_NAME)], version: Annotated[str, Path(description=_VERSION)]) -> int:
    return parse_version(name, version)


ModelName = Annotated[str, Depends(_model_name)]
"""`{name}`, a model name (ModelNotFound when it cannot be one)."""

VersionNumber = Annotated[int, Depends(_version)]
"""`{version}` of `{name}`, as a number (InvalidInput when malformed, ModelNotFound when 0)."""
