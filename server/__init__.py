"""hotserve: low-latency model serving (Open Inference Protocol, dynamic batching)."""

__version__ = "0.1.0"
