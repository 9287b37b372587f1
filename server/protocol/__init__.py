"""Wire formats -> validated tensors and back: v1 records, v2 JSON and the binary extension."""
