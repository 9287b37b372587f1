"""The memory request bodies may hold across every connection (`HOTSERVE_MAX_BODY_BYTES_IN_FLIGHT`),
shared by the inference fast lane and the route gate in front of FastAPI.

The per-request limits (413) bound one body; without a global bound, eight clients each sending a
60 MB body held 600 MB at once. A request takes its share before its body is read: its declared
Content-Length in full (what it will hold once read), or, for a body without one (chunked), each
chunk as it arrives. A share that would pass the limit is refused: 503 with `Retry-After` before a
byte of the body is read (a chunked body: as soon as it would pass). The share is given back when
the request is answered (the body is held until then: decoded, run, answered).

Only the event loop touches it (both lanes and the gRPC server run on it), so plain integers do.
"""

from __future__ import annotations

from server.errors import BodiesInFlightFull


class BodyBudget:
    """Bytes of request bodies taken and not yet given back, against `limit_bytes`."""

    __slots__ = ("limit_bytes", "held_bytes")

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held_bytes = 0

    def take(self, size_bytes: int) -> None:
        """Hold `size_bytes` more; BodiesInFlightFull (nothing held) when that would pass the limit."""
        held = self.held_bytes + size_bytes
        if held > self.limit_bytes:
            raise BodiesInFlightFull(size_bytes, self.held_bytes, self.limit_bytes)
        self.held_bytes = held

    def give_back(self, size_bytes: int) -> None:
        self.held_bytes -= size_bytes
