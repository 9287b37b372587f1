"""hotserve's HPACK decoder (`server/grpc_api/h2/hpack_decode.py`) against python-hyper's: the same
header lists from the same blocks, through insertions, evictions, size updates, Huffman and
never-indexed fields; malformed blocks refused with hpack's exceptions."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack import NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError

from server.grpc_api.h2.hpack_decode import HpackDecoder

NAMES = [
    ":method",
    ":path",
    ":authority",
    "content-type",
    "te",
    "grpc-timeout",
    "x-request-id",
    "user-agent",
    "x-a",
    "x-long-name-" + "n" * 150,
]


def random_headers(rng: random.Random) -> list[tuple[str, str] | NeverIndexedHeaderTuple]:
    headers: list[tuple[str, str] | NeverIndexedHeaderTuple] = []
    for _ in range(rng.randint(1, 12)):
        name = rng.choice(NAMES)
        value = rng.choice(
            [
                "POST",
                "/t.T/Echo",
                "",
                "application/grpc",
                "trailers",
                f"{rng.randint(0, 10**8)}m",
                "v" * rng.choice([1, 126, 127, 128, 300, 2000]),
                "é✓",
            ]
        )
        headers.append(NeverIndexedHeaderTuple(name, value) if rng.random() < 0.1 else (name, value))
    return headers


def test_blocks_decode_as_python_hypers_decoder_decodes_them() -> None:
    rng = random.Random(32)
    for _ in range(20):  # connections
        encoder, reference, decoder = (
            hpack.Encoder(),
            hpack.Decoder(max_header_list_size=1 << 20),
            HpackDecoder(max_header_list_size=1 << 20),
        )
        for _ in range(60):  # blocks
            if rng.random() < 0.1:
                encoder.header_table_size = rng.choice([0, 64, 256, 4096])  # a size update in the next block
            block = encoder.encode(random_headers(rng), huffman=rng.random() < 0.5)
            version = decoder.version
            expected = reference.decode(block, raw=True)
            assert decoder.decode(block) == [tuple(field) for field in expected]
            if decoder.version == version:  # the table did not change: the same block decodes the same
                assert decoder.decode(block) == [tuple(field) for field in expected]
                reference.decode(block, raw=True)


@pytest.mark.parametrize(
    "block, error",
    [
        (b"\x80", HPACKDecodingError),  # index 0
        (b"\xbe", HPACKDecodingError),  # index 62: the dynamic table is empty
        (b"\xff\x80\x80\x80\x80\x80", HPACKDecodingError),  # an integer over 2^28
        (b"\x40\x85abc", HPACKDecodingError),  # a string cut short
        (b"\x40", HPACKDecodingError),  # no name at all
        (b"\x3f\xe2\x1f", InvalidTableSizeError),  # a size update over 4,096
        (b"\x82\x20", HPACKDecodingError),  # a size update after a field
        (b"\x00\x83\xff\xff\xff\x01a", HPACKDecodingError),  # Huffman EOS in a string
    ],
)
def test_malformed_blocks_raise_hpacks_errors(block: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        HpackDecoder().decode(block)


def test_a_header_list_over_the_bound_is_refused() -> None:
    block = hpack.Encoder().encode([("x-big", "v" * 200)] * 3)
    assert len(HpackDecoder(max_header_list_size=1000).decode(block)) == 3
    with pytest.raises(OversizedHeaderListError):
        HpackDecoder(max_header_list_size=500).decode(block)
