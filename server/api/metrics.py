"""`GET /metrics`: Prometheus exposition of this app's instruments, on the main port or, with
`HOTSERVE_METRICS_PORT`, on a listener of its own (prometheus_client's, in a thread)."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, start_http_server

from server.api.deps import EdgeDep

router = APIRouter()


@router.get(
    "/metrics",
    responses={200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE_LATEST: {}}}},
    response_class=Response,
)
async def metrics(edge: EdgeDep) -> Response:
    return Response(generate_latest(edge.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsListener:
    """`/metrics` on its own port, served from a thread (scrapes never touch the event loop)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
