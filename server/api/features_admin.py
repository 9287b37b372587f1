"""`/admin/features/...`: the feature store's control routes (list views, write entity rows).

What `hotserve features materialize --server` talks to, so the embedded store (no Redis) can be
filled in a running server; with Redis configured the rows go to Redis the same way. Rows are
checked one by one against the view (`features/values.py`): bad ones are answered with their
index and reason, the rest written. Rewritten entities leave the local cache at once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from server.api.admin_body import json_body
from server.api.deps import AdminCallerDep, EdgeDep
from server.api.path_params import ModelName, VersionNumber
from server.contract.manifest import FeatureView
from server.features.service import repository_views
from server.features.store import EntityWrite
from server.features.values import RowRejected, check_write

router = APIRouter(prefix="/admin/features", tags=["admin"])

MAX_ROWS = 10_000


class RowsIn(BaseModel):
    """Entity rows to store: `{"entity": ..., "event_time": <unix s or ISO-8601>, "values": {...}}`."""

    rows: list[dict[str, Any]] = Field(max_length=MAX_ROWS)
    ttl_s: float | None = Field(default=None, gt=0)
    """Expiry of the written keys; None: they do not expire."""


class Rejected(BaseModel):
    index: int
    reason: str


class RowsOut(BaseModel):
    view: str
    written: int
    rejected: list[Rejected]


def _view(edge: EdgeDep, name: str, version: int) -> FeatureView:
    views = repository_views(edge.settings.model_repository)
    view = views.get(f"{name}:v{version}")
    if view is None:
        raise HTTPException(
            404,
            f"no model.json in the repository declares feature view "
            f"{name}:v{version} (known: {sorted(views) or 'none'})",
        )
    return view


@router.get("/views")
async def list_views(edge: EdgeDep, _: AdminCallerDep) -> dict[str, Any]:
    """The views of the repository's models and the store they are looked up in."""
    lookup, feast = edge.features.lookup, edge.features.feast
    return {
        "store": lookup.store.describe(),
        "backend": lookup.store.backend,
        "breaker": lookup.breaker.state.name.lower(),
        "feast_store": None if feast is None else feast.store.describe(),
        "feast_breaker": None if feast is None else feast.breaker.state.name.lower(),
        "views": [view.model_dump() for view in repository_views(edge.settings.model_repository).values()],
    }


@router.post("/views/{name}/versions/{version}/rows")
async def write_rows(
    name: ModelName, version: VersionNumber, request: Request, edge: EdgeDep, _: AdminCallerDep
) -> RowsOut:
    body = await json_body(request, RowsIn)
    view = _view(edge, name, version)
    if view.feast is not None:
        raise HTTPException(
            409,
            f"feature view {view.label} reads Feast project {view.feast.project!r}: write it with `feast materialize`",
        )
    writes: list[EntityWrite] = []
    rejected: list[Rejected] = []
    for index, row in enumerate(body.rows):
        values = row.get("values")
        if not isinstance(values, dict):
            rejected.append(Rejected(index=index, reason="values: expected an object of features"))
            continue
        try:
            writes.append(check_write(view, row.get("entity"), values, row.get("event_time")))
        except RowRejected as exc:
            rejected.append(Rejected(index=index, reason=str(exc)))
    lookup = edge.features.lookup
    written = await lookup.store.put_many(writes, view, body.ttl_s)
    for write in writes:
        lookup.cache.discard(view.key_prefix + write.entity)
    return RowsOut(view=view.label, written=written, rejected=rejected)
