"""The one table from `HotserveError` class to HTTP status, and every error body as `{"error": ...}`.

Starlette dispatches exception handlers along the MRO, so one handler on the base
class covers the family; the table is looked up the same way. Framework errors
(unknown route 404, 405, a body or parameter that does not validate: 400) are rewritten into
the same form.
Anything unexpected is logged with its traceback and answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.api.request_log import note_error
from server.errors import (
    BodiesInFlightFull,
    Conflict,
    ControlStateUnavailable,
    DeadlineExceeded,
    EntityNotFound,
    FeatureStoreUnavailable,
    FeatureValueInvalid,
    Forbidden,
    HotserveError,
    InferenceFailed,
    InvalidInput,
    LabelStoreUnavailable,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    ReleaseNotFound,
    ShuttingDown,
    Unauthorized,
)

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[BaseException], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    ModelNotFound: 404,
    ReleaseNotFound: 404,
    EntityNotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    Overloaded: 429,
    BodiesInFlightFull: 503,
    ModelNotReady: 503,
    FeatureStoreUnavailable: 503,
    ControlStateUnavailable: 503,
    LabelStoreUnavailable: 503,
    FeatureValueInvalid: 500,
    DeadlineExceeded: 504,
    InferenceFailed: 500,
    ModelLoadFailed: 500,
    HotserveError: 500,
}


def status_for(exc: BaseException) -> int:
    """HTTP status of any exception: the nearest class in the table along the MRO, else 500."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


def json_response(doc: Any, status: int = 200) -> Response:
    """A JSON answer of a FastAPI route (orjson: numpy-free docs, no pydantic round trip)."""
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def error_body(message: str, fields: dict[str, Any] | None = None) -> bytes:
    """The one shape of every error body, in both lanes: `{"error": "..."}` (the v2 form), with an
    error's own facts beside it when it has any (`HotserveError.fields`)."""
    return orjson.dumps({"error": message, **fields} if fields else {"error": message})


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    request: Request | None = None,
    fields: dict[str, Any] | None = None,
    expected: bool = False,
) -> Response:
    """The error answer of a FastAPI route; with `request`, its message goes into the request's
    log event (`expected`: at INFO, an answer given on purpose such as shutting down)."""
    if request is not None:
        note_error(request.scope, message, expected)
    return Response(error_body(message, fields), status_code=status, media_type="application/json", headers=headers)


def describe_error(exc: HotserveError, where: str) -> tuple[int, str, dict[str, str]]:
    """(status, message, extra headers) of a HotserveError; logs the server's own failures."""
    status = status_for(exc)
    headers = {}
    if isinstance(exc, Overloaded | BodiesInFlightFull):
        headers["Retry-After"] = str(max(1, exc.retry_after_s))
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="hotserve-admin"'
    if status >= 500 and status not in (503, 504):
        logger.error("%s failed: %s", where, exc.message)
    return status, exc.message, headers


async def _hotserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HotserveError)
    status, message, headers = describe_error(exc, f"{request.method} {request.url.path}")
    return error_response(status, message, headers or None, request, exc.fields, isinstance(exc, ShuttingDown))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return error_response(exc.status_code, message, dict(exc.headers) if exc.headers else None, request)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()
    )
    # 400, not FastAPI's 422: the v2 protocol and the admin API answer every malformed request 400.
    return error_response(400, problems or "invalid request", request=request)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error", request=request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HotserveError, _hotserve_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
