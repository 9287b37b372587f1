"""The one table from `HotserveError` class to gRPC status code: the REST table's twin.

Looked up along the MRO like `server/api/error_handlers.py`'s, and the codes mean the same
thing as its HTTP statuses: INVALID_ARGUMENT (400), UNAUTHENTICATED (401), PERMISSION_DENIED
(403), NOT_FOUND (404), FAILED_PRECONDITION (409; ABORTED for a stale control revision),
RESOURCE_EXHAUSTED (413 too large, 429 queue full), UNAVAILABLE (503), DEADLINE_EXCEEDED
(504), INTERNAL (500). The message is the error's own, naming the field.
"""

from __future__ import annotations

import logging

import grpc

from server.errors import (
    BodiesInFlightFull,
    Conflict,
    ControlConflict,
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
    Unauthorized,
)

logger = logging.getLogger(__name__)

CODE_BY_ERROR: dict[type[BaseException], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ReleaseNotFound: grpc.StatusCode.NOT_FOUND,
    EntityNotFound: grpc.StatusCode.NOT_FOUND,
    ControlConflict: grpc.StatusCode.ABORTED,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BodiesInFlightFull: grpc.StatusCode.UNAVAILABLE,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    FeatureStoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    ControlStateUnavailable: grpc.StatusCode.UNAVAILABLE,
    LabelStoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    FeatureValueInvalid: grpc.StatusCode.INTERNAL,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    ModelLoadFailed: grpc.StatusCode.INTERNAL,
    HotserveError: grpc.StatusCode.INTERNAL,
}

RETRY_AFTER = "retry-after"
"""Trailing metadata of a RESOURCE_EXHAUSTED for a full queue: seconds, as REST's `Retry-After`."""


def code_for(exc: BaseException) -> grpc.StatusCode:
    """gRPC status code of any exception: the nearest class in the table along the MRO, else INTERNAL."""
    for cls in type(exc).__mro__:
        code = CODE_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def describe_error(exc: HotserveError, where: str) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(code, message, trailing metadata) of a HotserveError; logs the server's own failures."""
    code = code_for(exc)
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, Overloaded):
        trailers = ((RETRY_AFTER, str(max(1, exc.retry_after_s))),)
    if code is grpc.StatusCode.INTERNAL:
        logger.error("%s failed: %s", where, exc.message)
    return code, exc.message, trailers
