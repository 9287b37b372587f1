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
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from server.api.deps import AdminPlane, Edge
from server.errors import HotserveError
from server.grpc_api.calls import Context, GrpcCall
from server.grpc_api.status import describe_error

ADMIN_OFF = "admin API off: set HOTSERVE_ADMIN_TOKENS, HOTSERVE_ADMIN_TOKENS_FILE or HOTSERVE_ADMIN_TOKEN"
"""Why a repository RPC is UNIMPLEMENTED on a server without admin tokens (REST: no such route)."""

Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]"


class AdminGate(grpc.aio.ServerInterceptor):
    """Credentials before the message for the methods in `admin_methods` (full names)."""

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
        if self._admin is None:
            return _refusal(self._edge, method, 404, grpc.StatusCode.UNIMPLEMENTED, ADMIN_OFF)
        authorization = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
        try:
            self._admin.tokens.identify(authorization)
        except HotserveError as error:
            code, message, _ = describe_error(error, f"gRPC {method}")
            status = 401 if code is grpc.StatusCode.UNAUTHENTICATED else 403
            return _refusal(self._edge, method, status, code, message)
        return await continuation(handler_call_details)


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
