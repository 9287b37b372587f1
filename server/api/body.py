"""Read a request body once, refusing more than `settings.max_request_bytes` (413).

A declared Content-Length over the limit is refused before reading; a chunked body
is counted as it streams and refused as soon as it passes the limit.
"""

from __future__ import annotations

from fastapi import Request

from server.errors import InvalidInput, PayloadTooLarge


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it is known to exceed `limit_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput("Content-Length", expected="an integer", got=repr(declared)) from None
        if size > limit_bytes:
            raise PayloadTooLarge(size, limit_bytes)
        return await request.body()
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit_bytes:
            raise PayloadTooLarge(received, limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)
