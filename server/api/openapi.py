"""The OpenAPI document the server publishes at `/openapi.json` (HTTP edge, built once).

FastAPI describes the routes of its router; this adds what it cannot see or says otherwise:
- the inference routes of the plain-ASGI fast lane (`server/api/inference.py`), which FastAPI's
  router never matches: v2 infer and v1 `:predict`, each optionally pinned to a version;
- error answers as the server gives them (`server/api/error_handlers.py`): `{"error": ...}`
  with 400 for a malformed request (FastAPI documents 422, which this server never answers),
  404 for a model or version not found, 401/403 on admin routes (bearer tokens), and any other
  error status in the same shape;
- the bearer scheme of the admin routes (`/admin/...`, `/v2/repository/...`).
A fuzzer reads this document (tests/integration/test_openapi_fuzz.py), so it must cover every
route and say what each answers.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON = "application/json"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
    "description": "Every error answer: the message names the field, what was expected and what came.",
}

_NAME_PARAMETER: dict[str, Any] = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A model name as in the repository.",
}
_VERSION_PARAMETER: dict[str, Any] = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A version number: a positive integer in ASCII digits (400 otherwise).",
}

_V2_TENSOR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
            + ["FP16", "FP32", "FP64", "BYTES"],
        },
        "data": {"type": "array", "description": "Row-major values, flat or nested."},
        "parameters": {"type": "object"},
    },
    "required": ["name", "shape", "datatype"],
}
_V2_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "KServe v2 / Triton inference request (JSON; binary tensors with `Inference-Header-Content-Length`).",
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "description": "`timeout` (microseconds), `binary_data_output`."},
        "inputs": {"type": "array", "items": _V2_TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                "required": ["name"],
            },
        },
    },
    "required": ["inputs"],
}
_V2_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {"type": "array", "items": _V2_TENSOR},
    },
    "required": ["model_name", "outputs"],
}
_V1_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "KServe v1 / TF Serving: one record (an object of features) or one raw row per instance.",
    "properties": {"instances": {"type": "array", "minItems": 1}},
    "required": ["instances"],
}
_V1_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "predictions": {"type": "array"},
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
    },
    "required": ["predictions"],
}

_INFERENCE_ERRORS = {
    "400": "Malformed request: body, tensors, version or timeout",
    "404": "Unknown model or version, or an entity the feature store does not hold",
    "405": "Only POST",
    "413": "Body over HOTSERVE_MAX_REQUEST_BYTES",
    "429": "Queue full (Retry-After)",
    "503": "Not ready, shutting down, or the feature store unavailable",
    "504": "Deadline passed",
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ERROR}}}


def _inference(summary: str, request: dict[str, Any], response: dict[str, Any], pinned: bool) -> dict[str, Any]:
    parameters = [_NAME_PARAMETER, _VERSION_PARAMETER] if pinned else [_NAME_PARAMETER]
    return {
        "post": {
            "summary": summary,
            "tags": ["inference"],
            "parameters": parameters,
            "requestBody": {"required": True, "content": {_JSON: {"schema": request}}},
            "responses": {
                "200": {"description": "The model's answer", "content": {_JSON: {"schema": response}}},
                **{code: _error(text) for code, text in _INFERENCE_ERRORS.items()},
            },
        }
    }


def inference_paths() -> dict[str, Any]:
    """Path items of the fast lane's routes (`server/protocol/paths.py` matches them)."""
    return {
        "/v2/models/{name}/infer": _inference("v2 inference", _V2_REQUEST, _V2_RESPONSE, pinned=False),
        "/v2/models/{name}/versions/{version}/infer": _inference(
            "v2 inference on a version", _V2_REQUEST, _V2_RESPONSE, pinned=True
        ),
        "/v1/models/{name}:predict": _inference("v1 predict", _V1_REQUEST, _V1_RESPONSE, pinned=False),
        "/v1/models/{name}/versions/{version}:predict": _inference(
            "v1 predict on a version", _V1_REQUEST, _V1_RESPONSE, pinned=True
        ),
    }


_ADMIN_PREFIXES = ("/admin", "/v2/repository")


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's) with the fast lane's routes, the error answers and admin security."""
    paths: dict[str, Any] = document.setdefault("paths", {})
    components: dict[str, Any] = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    schemas["Error"] = _ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for path, item in paths.items():
        admin = path.startswith(_ADMIN_PREFIXES)
        for operation in item.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None or operation.get("parameters"):
                responses.setdefault("400", _error("Malformed request: a parameter or the body"))
            if "{name}" in path:
                responses.setdefault("404", _error("Unknown model or version"))
            if admin:
                responses.setdefault("400", _error("Malformed body"))
                responses.setdefault("401", _error("No bearer token"))
                responses.setdefault("403", _error("A token this server does not hold"))
                operation["security"] = [{"adminBearer": []}]
            responses.setdefault("default", _error("Any other error, in the same shape"))
    paths.update(inference_paths())
    components.setdefault("securitySchemes", {})["adminBearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "HOTSERVE_ADMIN_TOKENS: 401 without a token, 403 with one the server does not hold.",
    }
    return document
