"""One gRPC call as the edge sees it: its metadata, request id, own deadline and request events.

The request-context step of the REST edge, for gRPC: the id comes from `x-request-id` (or a W3C
`traceparent`) metadata, generated otherwise, set in the log context variable and echoed in
the trailing metadata.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import NoReturn, Protocol, TypeAlias

import grpc

from server.api.context import incoming_request_id, new_request_id
from server.api.deps import Edge

Metadatum: TypeAlias = tuple[str, str | bytes]
"""One metadata entry: a lower-case key, a str value (bytes for a `-bin` key)."""


class Context(Protocol):
    """What an RPC method uses of its call: the part of grpc.aio's `ServicerContext` that hotserve's
    own transport (`server/grpc_api/h2/rpc.py`'s `CallContext`) provides too."""

    def invocation_metadata(self) -> Iterable[Metadatum] | None: ...

    def time_remaining(self) -> float | None: ...

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str]] = ()
    ) -> NoReturn: ...

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str]]) -> None: ...


PROTOCOL = "grpc"
"""The `protocol` label of metrics and request events for requests served over gRPC."""


class GrpcCall:
    """A ServicerContext's metadata read once."""

    __slots__ = ("_context", "_metadata", "request_id", "echo", "alone")

    def __init__(self, context: Context) -> None:
        self._context = context
        self.alone: bool = getattr(context, "alone", False)
        """hotserve's transport knows no other call is in its hands (`InferenceRequest.alone`);
        grpc.aio cannot tell."""
        self._metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):  # `-bin` keys carry bytes; none of ours does
                self._metadata[key] = value
        found = incoming_request_id(
            [(key.encode(), value.encode("latin-1", "replace")) for key, value in self._metadata.items()]
        )
        self.request_id = found or new_request_id()
        self.echo: tuple[tuple[str, str], ...] = (("x-request-id", self.request_id),)

    def metadata(self, key: str) -> str | None:
        """A metadata value (keys are lower-case on the wire)."""
        return self._metadata.get(key)

    def deadline(self) -> float | None:
        """The call's own deadline as a `time.monotonic()` value, or None when the client set none."""
        remaining = self._context.time_remaining()
        return None if remaining is None else time.monotonic() + max(0.0, remaining)

    def log_error(self, edge: Edge, rpc: str, status: int, message: str, duration_s: float) -> None:
        """The request event of a failed non-inference RPC (inference records its own). `status` is
        the HTTP status of the same error in the REST table, so one query covers both transports."""
        edge.request_log.record(self.request_id, "gRPC", rpc, status, duration_s, protocol=PROTOCOL, error=message)

    async def abort(self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        """End the call with `code` (raises, as `ServicerContext.abort` does)."""
        await self._context.abort(code, message, trailing_metadata=trailers + self.echo)

    def succeed(self) -> None:
        """Echo the request id on a successful answer."""
        self._context.set_trailing_metadata(self.echo)
