"""The one check of a declared body size, for both lanes (the inference fast lane and the route
gate in front of FastAPI): a body announced over the limit is refused before a byte is read."""

from __future__ import annotations

from server.errors import InvalidInput, PayloadTooLarge


def check_declared_length(declared: bytes | None, limit_bytes: int) -> int | None:
    """The declared size (None: no Content-Length); InvalidInput for one that is not an integer,
    PayloadTooLarge over `limit_bytes`."""
    if declared is None:
        return None
    try:
        size = int(declared)
    except ValueError:
        raise InvalidInput(
            "Content-Length", expected="an integer", got=repr(declared.decode(errors="replace"))
        ) from None
    if size > limit_bytes:
        raise PayloadTooLarge(size, limit_bytes)
    return size
