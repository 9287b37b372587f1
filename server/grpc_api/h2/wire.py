"""HTTP/2 frames and the header blocks of gRPC answers, as bytes.

Answers are encoded without the HPACK dynamic table (RFC 7541 section 6.2.2, literal header
field without indexing), so no state is shared with the client's decoder and every block can be
built from precomputed pieces: `:status 200` is static index 8, `content-type` static index 31.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable, Sequence
from typing import Final

# Frame types (RFC 9113 section 6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes (RFC 9113 section 7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# Settings identifiers (RFC 9113 section 6.5.2).
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME: Final = 16_384
MAX_WINDOW: Final = 2**31 - 1

FRAME_HEADER: Final = struct.Struct(">BHBBL")
"""Length (24 bits: a byte and a half-word), type, flags, stream id (its top bit reserved)."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return FRAME_HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id) + payload


def settings(values: Sequence[tuple[int, int]]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", key, value) for key, value in values))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">LL", last_stream_id, code) + debug)


def header_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """A HEADERS frame, and CONTINUATION frames when `block` is larger than the peer's frame size."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    pieces = [block[start : start + max_frame] for start in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream_id, pieces[0])]
    out += [frame(CONTINUATION, 0, stream_id, piece) for piece in pieces[1:-1]]
    out.append(frame(CONTINUATION, END_HEADERS, stream_id, pieces[-1]))
    return b"".join(out)


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with `first`'s high bits before the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string(value: bytes) -> bytes:
    """An HPACK string literal, not Huffman-coded."""
    return _integer(len(value), 7, 0) + value


def literal(name: bytes, value: bytes) -> bytes:
    """A header field, literal without indexing, with a literal name."""
    return b"\x00" + string(name) + string(value)


def indexed_name_literal(index: int, value: bytes) -> bytes:
    """A header field, literal without indexing, named by a static-table index."""
    return _integer(index, 4, 0) + string(value)


STATUS_200: Final = b"\x88"
CONTENT_TYPE_GRPC: Final = indexed_name_literal(31, b"application/grpc")
RESPONSE_HEADERS: Final = STATUS_200 + CONTENT_TYPE_GRPC
"""The header block of every answer that carries a message."""
_STATUS_PREFIX: Final = b"\x00" + string(b"grpc-status")
_OK: Final = _STATUS_PREFIX + string(b"0")
_MESSAGE_PREFIX: Final = b"\x00" + string(b"grpc-message")
_UNRESERVED: Final = frozenset(range(0x20, 0x7F)) - {ord("%")}


def http_status(status: int) -> bytes:
    """`:status` of an answer refused at the HTTP level (405, 415): static index 8 is 200."""
    return indexed_name_literal(8, str(status).encode())


def percent_encode(message: str) -> bytes:
    """`grpc-message`'s encoding: UTF-8, then every byte outside printable ASCII (and `%`) as %XX."""
    raw = message.encode()
    if all(byte in _UNRESERVED for byte in raw):
        return raw
    return b"".join(bytes((byte,)) if byte in _UNRESERVED else b"%%%02X" % byte for byte in raw)


def trailers(code: int, message: str, metadata: Iterable[tuple[str, str | bytes]]) -> bytes:
    """grpc-status, grpc-message (when there is one) and the call's trailing metadata."""
    block = _OK if code == 0 else _STATUS_PREFIX + string(str(code).encode())
    if message:
        block += _MESSAGE_PREFIX + string(percent_encode(message))
    for key, value in metadata:
        block += literal(key.encode("ascii"), _metadata_value(key, value))
    return block


def _metadata_value(key: str, value: str | bytes) -> bytes:
    if key.endswith("-bin"):
        raw = value if isinstance(value, bytes) else value.encode()
        return base64.b64encode(raw).rstrip(b"=")
    return value.encode("latin-1") if isinstance(value, str) else value
