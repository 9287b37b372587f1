"""Admin routes, where the control path starts: `/admin/...` and the Triton/MLServer repository
extension (`/v2/repository/...`), both behind the admin bearer tokens.

Mounted only when a token is configured (otherwise every path here is 404). Each route
authenticates (`AdminDep`: 401 missing, 403 wrong), hands names from the URL to the
`Controller`, which looks them up among what the repository scan found (a name is never
a path), and answers with the model's state after the change. Errors come from the one
table in `error_handlers.py`: unknown model/version 404, not ready or refused 409 with the
reason, malformed body 400.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError

from server.api.deps import AdminDep
from server.api.error_handlers import json_response
from server.errors import InvalidInput
from server.protocol.paths import parse_version
from server.registry.audit import parse_time
from server.registry.control_state import ControlSnapshot, ShadowPolicy
from server.registry.controller import Controller, Outcome, evidence_view
from server.registry.promotion import PromotionRequirements
from server.registry.versions import VersionState, VersionStatus
from server.routing.table import RoutingTable

router = APIRouter(prefix="/admin")
repository_router = APIRouter(prefix="/v2/repository")

MAX_AUDIT_ENTRIES = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AliasBody(_Body):
    version: PositiveInt


class TrafficBody(_Body):
    weights: dict[str, int]
    """Percent of unpinned requests per alias or version number; they sum to 100."""


class PromoteBody(_Body):
    version: PositiveInt
    requirements: PromotionRequirements | None = None
    force: bool = False


class IndexBody(_Body):
    ready: bool = False


class RepositoryBody(_Body):
    parameters: dict[str, Any] = {}


BodyT = TypeVar("BodyT", bound=_Body)


# --- /admin ---------------------------------------------------------------------------------------


@router.get("/models")
async def list_models(admin: AdminDep) -> Response:
    registry = admin.controller.registry
    names = sorted({s.name for s in registry.statuses()})
    return json_response(
        {"revision": registry.applied.revision, "models": [model_view(admin.controller, name) for name in names]}
    )


@router.get("/models/{name}")
async def get_model(name: str, admin: AdminDep) -> Response:
    return json_response(model_view(admin.controller, name))


@router.post("/models/{name}/versions/{version}/load")
async def load_version(name: str, version: str, admin: AdminDep) -> Response:
    outcome = await admin.controller.load(admin.caller, name, parse_version(name, version))
    return _changed(admin.controller, outcome)


@router.post("/models/{name}/versions/{version}/unload")
async def unload_version(name: str, version: str, admin: AdminDep) -> Response:
    outcome = await admin.controller.unload(admin.caller, name, parse_version(name, version))
    return _changed(admin.controller, outcome)


@router.put("/models/{name}/aliases/{alias}")
async def set_alias(name: str, alias: str, body: AliasBody, admin: AdminDep) -> Response:
    outcome = await admin.controller.set_alias(admin.caller, name, alias, body.version)
    return _changed(admin.controller, outcome)


@router.delete("/models/{name}/aliases/{alias}")
async def delete_alias(name: str, alias: str, admin: AdminDep) -> Response:
    outcome = await admin.controller.delete_alias(admin.caller, name, alias)
    return _changed(admin.controller, outcome)


@router.post("/models/{name}/rollback")
async def rollback(name: str, admin: AdminDep) -> Response:
    outcome = await admin.controller.rollback(admin.caller, name)
    return _changed(admin.controller, outcome)


@router.post("/models/{name}/promote")
async def promote(name: str, body: PromoteBody, admin: AdminDep) -> Response:
    """`production` -> `version`; with requirements, only on enough evidence (or `force`, audited)."""
    outcome = await admin.controller.promote(admin.caller, name, body.version, body.requirements, body.force)
    return _changed(admin.controller, outcome)


@router.put("/models/{name}/traffic")
async def set_traffic(name: str, body: TrafficBody, admin: AdminDep) -> Response:
    outcome = await admin.controller.set_traffic(admin.caller, name, body.weights)
    return _changed(admin.controller, outcome)


@router.delete("/models/{name}/traffic")
async def clear_traffic(name: str, admin: AdminDep) -> Response:
    outcome = await admin.controller.clear_traffic(admin.caller, name)
    return _changed(admin.controller, outcome)


@router.put("/models/{name}/shadow")
async def set_shadow(name: str, body: ShadowPolicy, admin: AdminDep) -> Response:
    outcome = await admin.controller.set_shadow(admin.caller, name, body)
    return _changed(admin.controller, outcome)


@router.delete("/models/{name}/shadow")
async def clear_shadow(name: str, admin: AdminDep) -> Response:
    outcome = await admin.controller.clear_shadow(admin.caller, name)
    return _changed(admin.controller, outcome)


@router.get("/models/{name}/versions/{version}/evidence")
async def evidence(name: str, version: str, admin: AdminDep) -> Response:
    """What a candidate has shown on this replica (canary answers, shadow comparisons)."""
    return json_response(evidence_view(admin.controller.evidence(name, parse_version(name, version))))


@router.get("/replicas")
async def replicas(admin: AdminDep) -> Response:
    """Every replica that reported recently, with the routing revision and split it applied."""
    registry = admin.controller.registry
    reports = await registry.control.replicas()
    return json_response({"revision": registry.applied.revision, "replicas": [r.model_dump() for r in reports]})


@router.post("/repository/rescan")
async def rescan(admin: AdminDep) -> Response:
    found = await admin.controller.rescan(admin.caller)
    return json_response(
        {
            "added": [{"model": m, "version": v} for m, v in found.added],
            "removed": [{"model": m, "version": v} for m, v in found.removed],
        }
    )


@router.get("/audit")
async def audit(
    admin: AdminDep,
    model: str | None = None,
    alias: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = Query(default=100, ge=1, le=MAX_AUDIT_ENTRIES),
) -> Response:
    entries = await admin.controller.audit.read(
        model=model, alias=alias, since=_time("since", since), until=_time("until", until), limit=limit
    )
    return json_response({"entries": [e.model_dump(mode="json", by_alias=True) for e in entries]})


def model_view(controller: Controller, name: str) -> dict[str, Any]:
    """One model: which version serves, its desired state, and every version's state and costs."""
    registry = controller.registry
    statuses = registry.versions(name)
    control = registry.applied.model(name)
    return {
        "name": name,
        "serving": registry.serving(name),
        "aliases": dict(sorted(control.aliases.items())),
        "loaded": control.loaded,
        "retained": control.retained,
        "stopped": control.stopped,
        "previous_production": registry.applied.previous_production(name),
        "traffic": dict(sorted(control.traffic.items())),
        "shadow": None if control.shadow is None else control.shadow.model_dump(),
        "routing": _routing_view(registry.table, name),
        "versions": [_version_view(s, registry.applied) for s in statuses],
    }


def _routing_view(table: RoutingTable, name: str) -> dict[str, Any]:
    """What this replica applied: the revision, each version's effective share, and why part of
    the policy is not served as written (a canary still loading goes to production meanwhile)."""
    routes = table.models.get(name)
    return {
        "revision": table.revision,
        "weights": {} if routes is None else {str(v): w for v, w in sorted(routes.weights.items())},
        "fallbacks": [] if routes is None else list(routes.fallbacks),
        "shadow_ready": routes is not None and routes.shadow is not None,
    }


def _version_view(status: VersionStatus, snapshot: ControlSnapshot) -> dict[str, Any]:
    aliases = sorted(a for a, v in snapshot.model(status.name).aliases.items() if v == status.version)
    return {
        "version": status.version,
        "state": status.state.value,
        "reason": status.reason,
        "aliases": aliases,
        "loaded_at": status.loaded_at,
        "load_duration_s": status.load_duration_s,
        "provider": status.provider,
        "memory_bytes": status.memory_bytes,
        "inflight": status.inflight,
    }


def _changed(controller: Controller, outcome: Outcome) -> Response:
    return json_response(
        {
            "change": {
                "action": outcome.action,
                "model": outcome.model,
                "alias": outcome.alias,
                "from": outcome.from_version,
                "to": outcome.to_version,
                "changed": outcome.changed,
                "revision": outcome.revision,
            },
            "model": model_view(controller, outcome.model),
        }
    )


def _time(field: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise InvalidInput(field, expected="an ISO 8601 time (e.g. 2026-11-24T14:00:00Z)", got=repr(value)) from None


# --- /v2/repository (Triton / MLServer model repository extension) ------------------------------

# Triton's states: READY, LOADING, UNLOADING, UNAVAILABLE (with a reason).
_TRITON_STATES = {VersionState.READY: "READY", VersionState.LOADING: "LOADING", VersionState.DRAINING: "UNLOADING"}
_TRITON_REASONS = {VersionState.AVAILABLE: "not loaded", VersionState.UNLOADED: "unloaded"}


@repository_router.post("/index")
async def repository_index(request: Request, admin: AdminDep) -> Response:
    """Every version in the repository (rescanned first), in Triton's index shape."""
    body = await _triton_body(request, IndexBody)
    await admin.controller.registry.rescan()
    return json_response(triton_index(admin.controller.registry.statuses(), body.ready))


@repository_router.post("/models/{name}/load")
async def repository_load(name: str, request: Request, admin: AdminDep) -> Response:
    """Serve the model again: its `production` version, or the newest one without an alias."""
    body = await _triton_body(request, RepositoryBody)
    refuse_load_overrides(body.parameters)
    await admin.controller.load_model(admin.caller, name)
    return Response(status_code=200)


@repository_router.post("/models/{name}/unload")
async def repository_unload(name: str, request: Request, admin: AdminDep) -> Response:
    """Take the model out of service (every version drains, then unloads)."""
    await _triton_body(request, RepositoryBody)  # `unload_dependents`: no ensembles here
    await admin.controller.unload_model(admin.caller, name)
    return Response(status_code=200)


def triton_index(statuses: Iterable[VersionStatus], ready_only: bool) -> list[dict[str, str]]:
    """The repository index in Triton's shape (name, version, state, reason), shared by the REST
    route and the gRPC `RepositoryIndex`."""
    entries = []
    for status in statuses:
        state = _TRITON_STATES.get(status.state, "UNAVAILABLE")
        if ready_only and state != "READY":
            continue
        entry = {"name": status.name, "version": str(status.version), "state": state}
        reason = status.reason or _TRITON_REASONS.get(status.state)
        if state == "UNAVAILABLE" and reason:
            entry["reason"] = reason
        entries.append(entry)
    return entries


def refuse_load_overrides(parameters: Iterable[str]) -> None:
    """A repository load names no config or files to use instead of the repository's (Triton's
    `config` and `file:<path>` parameters): InvalidInput when it does."""
    overrides = sorted(k for k in parameters if k == "config" or k.startswith("file:"))
    if overrides:
        raise InvalidInput(
            "parameters",
            detail=f"{', '.join(overrides)} not supported: hotserve loads only what the model repository holds",
        )


async def _triton_body(request: Request, shape: type[BodyT]) -> BodyT:
    """The JSON body whatever its Content-Type (Triton's clients send none); empty: defaults."""
    raw = await request.body()
    try:
        return shape.model_validate_json(raw) if raw.strip() else shape()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in error.errors())
        raise InvalidInput("body", detail=problems) from None
