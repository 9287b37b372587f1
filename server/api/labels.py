"""Labels and live quality over HTTP (control path): `POST /v2/models/{name}/labels` takes labels
(JSON array or lines, CSV, Parquet by Content-Type); `GET /admin/models/{name}/quality` reports
each version's live quality per window, its label-free estimate and its training figures.

Both need an admin bearer token (the route gate checks it before a byte of the body is read); a
label feeder gets a token of its own name in `HOTSERVE_ADMIN_TOKENS`, so the audit trail and the
token's revocation are its own. Mounted with the admin API (off without a token).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request, Response

from server.api.deps import AdminCallerDep
from server.api.error_handlers import json_response
from server.api.path_params import ModelName
from server.labels.service import Labels

router = APIRouter()


def _labels(request: Request) -> Labels:
    labels: Labels = request.app.state.labels
    return labels


@router.post("/v2/models/{name}/labels")
async def post_labels(name: ModelName, request: Request, caller: AdminCallerDep) -> Response:
    """Take a batch of labels: 200 with the counts (joined, duplicates, unknown and their ids,
    dropped, written); 400 refusing the whole batch, naming the labels that do not fit the task;
    503 when the served index or the pairs cannot be reached (nothing taken)."""
    intake = _labels(request).intake
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    result = await asyncio.to_thread(intake.take, name, body, content_type)
    return json_response(result.as_json())


@router.get("/admin/models/{name}/quality")
async def get_quality(
    name: ModelName,
    request: Request,
    caller: AdminCallerDep,
    since: float | None = Query(default=None, description="Epoch seconds of served time; default: until - span."),
    until: float | None = Query(default=None, description="Epoch seconds of served time; default: now."),
) -> Response:
    labels = _labels(request)
    labels.intake.model_contract(name)  # 404 for a model the repository does not have
    report = await asyncio.to_thread(labels.quality.report, name, since, until)
    return json_response(report)
