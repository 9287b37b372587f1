"""hotserve's own gRPC server transport: HTTP/2 (RFC 9113) for unary gRPC calls on the event loop.

One `asyncio.Protocol` per connection (`connection.py`) parses frames, keeps the flow-control
windows and the HPACK decoder (`hpack_decode.py`: hotserve's loop over python-hyper's `hpack`
Huffman and static tables), and frames gRPC messages; `wire.py` builds
the frames and encodes the answers' header blocks itself (static-table indices and literals, no
dynamic table); `rpc.py` routes a call to the servicer method, with the admin gate before the
message is read, the call's deadline, and the answer written in one `transport.write`.
"""
