"""The data plane: routing, leases, feature join, batching and shadow copies behind one object
that every transport (REST fast lane, gRPC) calls and that knows none of them."""
