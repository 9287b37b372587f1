"""The gRPC edge: the Open Inference Protocol service on its own port, beside the REST edge."""
