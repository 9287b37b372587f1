"""`GET /metrics`: Prometheus exposition of this app's instruments."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.api.deps import EdgeDep

router = APIRouter()


@router.get("/metrics")
async def metrics(edge: EdgeDep) -> Response:
    return Response(generate_latest(edge.metrics.registry), media_type=CONTENT_TYPE_LATEST)
