"""Admin routes, where the control path starts: `/admin/...` and the Triton/MLServer repository
extension (`/v2/repository/...`), both behind the admin bearer tokens.

Mounted only when a token is configured (otherwise every path here is 404). Each route
authenticates (`AdminDep`: 401 missing, 403 wrong), reads its JSON body whatever the
Content-Type (`admin_body.py`), hands names from the URL to the `ControlAPI` (queries
included; it looks them up among what the repository scan found: a name is never a path),
and answers with the model's state after the change. Errors come from the one table in
`error_handlers.py`: unknown model/version 404, not ready or refused 409 with the reason,
malformed body 400.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from server.api.admin_body import json_body
from server.api.deps import AdminCall, AdminDep
from server.api.error_handlers import json_response
from server.api.path_params import ModelName, VersionNumber
from server.errors import InvalidInput, ModelNotReady, ReleaseNotFound
from server.registry.audit import parse_time
from server.registry.control_api import ModelState, Outcome, RoutingState, VersionView
from server.registry.control_state import ShadowPolicy
from server.registry.promotion import PromotionRequirements
from server.registry.versions import VersionState, VersionStatus
from server.release.driver import ReleaseDriver
from server.release.policy import ReleasePolicy
from server.release.record import ReleaseRecord, schedule

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


# --- /admin ---------------------------------------------------------------------------------------


@router.get("/models")
async def list_models(admin: AdminDep) -> Response:
    found = await admin.controller.models()
    return json_response({"revision": found.revision, "models": [model_view(m) for m in found.models]})


@router.get("/models/{name}")
async def get_model(name: ModelName, admin: AdminDep) -> Response:
    return json_response(model_view(await admin.controller.model(name)))


@router.post("/models/{name}/versions/{version}/load")
async def load_version(name: ModelName, version: VersionNumber, admin: AdminDep) -> Response:
    outcome = await admin.controller.load(admin.caller, name, version)
    return await _changed(admin, outcome)


@router.post("/models/{name}/versions/{version}/unload")
async def unload_version(name: ModelName, version: VersionNumber, admin: AdminDep) -> Response:
    outcome = await admin.controller.unload(admin.caller, name, version)
    return await _changed(admin, outcome)


@router.put("/models/{name}/aliases/{alias}")
async def set_alias(name: ModelName, alias: str, request: Request, admin: AdminDep) -> Response:
    body = await json_body(request, AliasBody)
    outcome = await admin.controller.set_alias(admin.caller, name, alias, body.version)
    return await _changed(admin, outcome)


@router.delete("/models/{name}/aliases/{alias}")
async def delete_alias(name: ModelName, alias: str, admin: AdminDep) -> Response:
    outcome = await admin.controller.delete_alias(admin.caller, name, alias)
    return await _changed(admin, outcome)


@router.post("/models/{name}/rollback")
async def rollback(name: ModelName, admin: AdminDep) -> Response:
    outcome = await admin.controller.rollback(admin.caller, name)
    return await _changed(admin, outcome)


@router.post("/models/{name}/promote")
async def promote(name: ModelName, request: Request, admin: AdminDep) -> Response:
    """`production` -> `version`; with requirements, only on enough evidence (or `force`, audited)."""
    body = await json_body(request, PromoteBody)
    outcome = await admin.controller.promote(admin.caller, name, body.version, body.requirements, body.force)
    return await _changed(admin, outcome)


@router.put("/models/{name}/traffic")
async def set_traffic(name: ModelName, request: Request, admin: AdminDep) -> Response:
    body = await json_body(request, TrafficBody)
    outcome = await admin.controller.set_traffic(admin.caller, name, body.weights)
    return await _changed(admin, outcome)


@router.delete("/models/{name}/traffic")
async def clear_traffic(name: ModelName, admin: AdminDep) -> Response:
    outcome = await admin.controller.clear_traffic(admin.caller, name)
    return await _changed(admin, outcome)


@router.put("/models/{name}/shadow")
async def set_shadow(name: ModelName, request: Request, admin: AdminDep) -> Response:
    body = await json_body(request, ShadowPolicy)
    outcome = await admin.controller.set_shadow(admin.caller, name, body)
    return await _changed(admin, outcome)


@router.delete("/models/{name}/shadow")
async def clear_shadow(name: ModelName, admin: AdminDep) -> Response:
    outcome = await admin.controller.clear_shadow(admin.caller, name)
    return await _changed(admin, outcome)


class CaptureBody(_Body):
    share: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    """Share of the model's answered requests captured, on every replica (0: none)."""


@router.get("/models/{name}/capture")
async def read_capture(name: ModelName, request: Request, admin: AdminDep) -> Response:
    """The model's capture share as this replica applies it, and where captures go."""
    control = (await admin.controller.model(name)).control
    tap = request.app.state.edge.plane.capture
    writer = tap.writer
    return json_response(
        {
            "model": name,
            "enabled": tap.enabled,
            "share": tap.share(name),
            "override": control.capture,
            "default": tap.default_share,
            "sink": None if writer is None else writer.sink.describe(),
        }
    )


@router.put("/models/{name}/capture")
async def set_capture(name: ModelName, request: Request, admin: AdminDep) -> Response:
    body = await json_body(request, CaptureBody)
    outcome = await admin.controller.set_capture(admin.caller, name, body.share)
    return await _changed(admin, outcome)


@router.delete("/models/{name}/capture")
async def clear_capture(name: ModelName, admin: AdminDep) -> Response:
    """Back to the server's default share (`capture_sample`)."""
    outcome = await admin.controller.set_capture(admin.caller, name, None)
    return await _changed(admin, outcome)


@router.get("/models/{name}/versions/{version}/evidence")
async def evidence(name: ModelName, version: VersionNumber, admin: AdminDep) -> Response:
    """What a candidate has shown on this replica since its load (canary answers, shadow comparisons)
    against production over the same window."""
    return json_response(await admin.controller.evidence(name, version))


@router.get("/replicas")
async def replicas(admin: AdminDep) -> Response:
    """Every replica that reported recently, with the routing revision and split it applied."""
    found = await admin.controller.replicas()
    return json_response({"revision": found.revision, "replicas": [r.model_dump() for r in found.replicas]})


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
    entries = await admin.controller.audit(
        model=model, alias=alias, since=_time("since", since), until=_time("until", until), limit=limit
    )
    return json_response({"entries": [e.model_dump(mode="json", by_alias=True) for e in entries]})


def model_view(state: ModelState) -> dict[str, Any]:
    """One model: which version serves, its desired state, and every version's state and costs."""
    control = state.control
    return {
        "name": state.name,
        "serving": state.serving,
        "aliases": dict(sorted(control.aliases.items())),
        "loaded": control.loaded,
        "retained": control.retained,
        "stopped": control.stopped,
        "previous_production": state.previous_production,
        "traffic": dict(sorted(control.traffic.items())),
        "shadow": None if control.shadow is None else control.shadow.model_dump(),
        "capture": control.capture,
        "routing": _routing_view(state.routing),
        "versions": [_version_view(v) for v in state.versions],
    }


def _routing_view(routing: RoutingState) -> dict[str, Any]:
    """What this replica applied: the revision, each version's effective share, and why part of
    the policy is not served as written (a canary still loading goes to production meanwhile)."""
    return {
        "revision": routing.revision,
        "weights": {str(v): w for v, w in sorted(routing.weights.items())},
        "fallbacks": list(routing.fallbacks),
        "shadow_ready": routing.shadow_ready,
        # what the shadow's answers are compared by: the policy's explicit rule or the models' task
        "shadow_agreement": None if routing.shadow_agreement is None else routing.shadow_agreement.view(),
    }


def _version_view(view: VersionView) -> dict[str, Any]:
    status = view.status
    return {
        "version": status.version,
        "state": status.state.value,
        "reason": status.reason,
        "aliases": list(view.aliases),
        "loaded_at": status.loaded_at,
        "load_duration_s": status.load_duration_s,
        "provider": status.provider,
        "memory_bytes": status.memory_bytes,
        "inflight": status.inflight,
    }


async def _changed(admin: AdminCall, outcome: Outcome) -> Response:
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
            "model": model_view(await admin.controller.model(outcome.model)),
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
    body = await json_body(request, IndexBody, empty_ok=True)
    return json_response(triton_index(await admin.controller.index(admin.caller), body.ready))


@repository_router.post("/models/{name}/load", response_class=Response, responses={200: {"description": "Loaded"}})
async def repository_load(name: ModelName, request: Request, admin: AdminDep) -> Response:
    """Serve the model again: its `production` version, or the newest one without an alias."""
    body = await json_body(request, RepositoryBody, empty_ok=True)
    refuse_load_overrides(body.parameters)
    await admin.controller.load_model(admin.caller, name)
    return Response(status_code=200)


@repository_router.post("/models/{name}/unload", response_class=Response, responses={200: {"description": "Unloaded"}})
async def repository_unload(name: ModelName, request: Request, admin: AdminDep) -> Response:
    """Take the model out of service (every version drains, then unloads)."""
    await json_body(request, RepositoryBody, empty_ok=True)  # `unload_dependents`: no ensembles here
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


# --- releases: /admin/models/{m}/releases ---------------------------------------------------------


class ReleaseBody(_Body):
    version: PositiveInt
    policy: ReleasePolicy = ReleasePolicy()
    force: bool = False
    """Start even though the candidate cannot answer what production answers (audited)."""


def _releases(request: Request) -> ReleaseDriver:
    releases: ReleaseDriver | None = request.app.state.admin.releases
    if releases is None:
        raise ModelNotReady("releases need the model registry, which this app does not run")
    return releases


@router.post("/models/{name}/releases")
async def create_release(name: ModelName, request: Request, admin: AdminDep) -> Response:
    """Start a release (201); 404 unknown model or version, 409 one running, already serving, or
    a candidate that cannot answer what production answers (`differences`; unless `force`)."""
    body = await json_body(request, ReleaseBody)
    record = await _releases(request).create(admin.caller, name, body.version, body.policy, body.force)
    return json_response(release_view(record), status=201)


@router.get("/models/{name}/releases/current")
async def read_release(name: ModelName, request: Request, admin: AdminDep) -> Response:
    """The model's latest release: its step, the gates' figures, and `phase` (`Running`,
    `Successful`, `Failed`, `Inconclusive`), the field an external judge's success condition reads."""
    await admin.controller.model(name)
    record = await _releases(request).get(name)
    if record is None:
        raise ReleaseNotFound(name)
    return json_response(release_view(record))


@router.post("/models/{name}/releases/current/abort")
async def abort_release(name: ModelName, request: Request, admin: AdminDep) -> Response:
    """Ask the driving replica to roll the running release back (409 when none runs)."""
    await admin.controller.model(name)
    return json_response(release_view(await _releases(request).abort(admin.caller, name)))


PHASES = {
    "running": "Running",
    "promoted": "Successful",
    "rolled_back": "Failed",
    "aborted": "Failed",
    "inconclusive": "Inconclusive",
}


def release_view(record: ReleaseRecord) -> dict[str, Any]:
    step = record.current
    return {
        **record.model_dump(mode="json"),
        "phase": PHASES[record.state],
        "current_step": None if step is None or record.finished else step.label,
        "schedule": [s.label for s in schedule(record.policy)],
    }
