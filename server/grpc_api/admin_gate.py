"""The gRPC twin of the REST route gate (`server/api/route_gate.py`): a repository RPC without an
accepted bearer token is refused before one byte of its message is read.

grpc.aio reads a unary request whole (up to `grpc.max_receive_message_length`, the inference
limit, 64 MiB by default) before the method's code runs, so a token check in the method comes too
late: eight unauthenticated 60 MB `RepositoryModelLoad` calls took a server from 150 MB to 1.2 GB.
A server interceptor sees the method and the metadata first. For a refused call it answers with a
request-streaming handler that aborts at once without asking for the message: the client's bytes
stay in the transport's flow-control window (64 KiB a stream) and are dropped with the stream.
The repository RPCs' own messages are tiny (a model name, a few parameters), so once the token
is accepted the shared message limit is harmless; inference RPCs pass through untouched.
hotserve's own transport (`h2/`) asks `admin_refusal` from the call's HEADERS and drops its DATA.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc

from server.api.deps import AdminPlane, Edge
from server.errors import HotserveError
from server.grpc_api.calls import Context, GrpcCall, Metadatum
from server.grpc_api.h2.rpc import CallContext, Gate, Refusal, Route
from server.grpc_api.status import describe_error

ADMIN_OFF = "admin API off: set HOTSERVE_ADMIN_TOKENS, HOTSERVE_ADMIN_TOKENS_FILE or HOTSERVE_ADMIN_TOKEN"
"""Why a repository RPC is UNIMPLEMENTED on a server without admin tokens (REST: no such route)."""

Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]"


def admin_refusal(
    admin: AdminPlane | None, method: str, authorization: str | None
) -> tuple[int, grpc.StatusCode, str] | None:
    """Why a call of a repository RPC `method` is refused (REST status, code, message), or None when
    its bearer token is accepted. Both transports ask this from the call's metadata alone."""
    if admin is None:
        return 404, grpc.StatusCode.UNIMPLEMENTED, ADMIN_OFF
    try:
        admin.tokens.identify(authorization)
    except HotserveError as error:
        code, message, _ = describe_error(error, f"gRPC {method}")
        return 401 if code is grpc.StatusCode.UNAUTHENTICATED else 403, code, message
    return None


def header_gate(edge: Edge, admin: AdminPlane | None) -> Gate:
    """hotserve's transport's gate: asked from a repository RPC's HEADERS; a refusal is logged as
    the request event of the call, which is answered Trailers-Only with its request id."""

    def refuse(route: Route, metadata: Sequence[Metadatum]) -> Refusal | None:
        started = time.monotonic()
        authorization = next((value for key, value in metadata if key == "authorization"), None)
        refusal = admin_refusal(admin, route.name, authorization if isinstance(authorization, str) else None)
        if refusal is None:
            return None
        status, code, message = refusal
        call = GrpcCall(CallContext(metadata, None))
        call.log_error(edge, route.name.rsplit("/", 1)[-1], status, message, time.monotonic() - started)
        return code, message, call.echo

    return refuse


class AdminGate(grpc.aio.ServerInterceptor):
    """grpc.aio's gate: credentials before the message for the methods in `admin_methods` (full names)."""

    def __init__(self, edge: Edge, admin: AdminPlane | None, admin_methods: frozenset[str]) -> None:
        self._edge = edge
        self._admin = admin
        self._methods = admin_methods

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method not in self._methods:
            return await continuation(handler_call_details)
        authorization = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
        refusal = admin_refusal(self._admin, method, authorization)
        if refusal is None:
            return await continuation(handler_call_details)
        return _refusal(self._edge, method, *refusal)


def _refusal(
    edge: Edge, method: str, status: int, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that ends the call with `code` without reading its request (a request stream it
    never iterates: the message is never asked for)."""
    started = time.monotonic()

    async def refuse(requests: AsyncIterator[Any], context: Context) -> None:
        call = GrpcCall(context)
        call.log_error(edge, method.rsplit("/", 1)[-1], status, message, time.monotonic() - started)
        await call.abort(code, message)

    return grpc.stream_unary_rpc_method_handler(refuse)
