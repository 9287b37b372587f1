"""`Controller`: the `ControlAPI` over the registry, the control-state store and the audit log
(control path, below `api/admin.py` and the repository extension).

Each operation on a model runs under that model's lock: it checks the names it is given
against what the repository scan found (never a path), then prepares (`registry.prepare`:
read, sha256, session, warm-up of the versions the change needs; nothing takes traffic yet)
and commits (`registry.commit(edit)`: edit the stored snapshot, compare-and-set it, apply it:
the routing switches in one reference swap and what left it drains, then unloads). A version
that fails to load never gets into the routing and nothing is stored; the serving one keeps
serving, and what the preparation loaded is unloaded when it ends. Every attempt, done or
refused, is appended to the audit log with the name of the token that made it; so is every
rescan a caller asks for that finds something.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime

from server.contract.manifest import ModelManifest
from server.errors import Conflict, HotserveError, InvalidInput, PromotionRefused, VersionNotReady
from server.metrics.instruments import Metrics
from server.registry.audit import AuditEntry, AuditLog, Result
from server.registry.control_api import (
    Caller,
    Models,
    ModelState,
    Outcome,
    Replicas,
    RoutingState,
    VersionView,
)
from server.registry.control_state import PRODUCTION, ControlSnapshot, ShadowPolicy
from server.registry.promotion import Evidence, PromotionRequirements, gather, shortfalls
from server.registry.registry import Change, ModelRegistry
from server.registry.repository import Rescan
from server.registry.versions import VersionState, VersionStatus
from server.routing.traffic import check_weights, target_version

log = logging.getLogger(__name__)

ALIAS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")

__all__ = ["ALIAS_NAME", "Caller", "Controller", "Outcome", "evidence_view"]


class Controller:
    """Queries; load, unload, alias, traffic, shadow, promote, rollback, take out of / back into
    service; audited. Implements `ControlAPI`."""

    def __init__(
        self,
        registry: ModelRegistry,
        audit: AuditLog,
        metrics: Metrics,
        keep_previous_loaded: bool = True,
    ) -> None:
        self._registry = registry
        self._audit = audit
        self._metrics = metrics
        self._keep_previous = keep_previous_loaded

    # --- queries ----------------------------------------------------------------------------------

    async def models(self) -> Models:
        names = sorted({s.name for s in self._registry.statuses()})
        return Models(self._registry.applied.revision, tuple(self._model_state(name) for name in names))

    async def model(self, name: str) -> ModelState:
        return self._model_state(name)

    async def index(self, caller: Caller) -> list[VersionStatus]:
        await self._rescan(caller, audit_noop=False)
        return self._registry.statuses()

    async def replicas(self) -> Replicas:
        reports = await self._registry.control.replicas()
        return Replicas(self._registry.applied.revision, tuple(reports))

    async def audit(
        self,
        model: str | None = None,
        alias: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        return await self._audit.read(model=model, alias=alias, since=since, until=until, limit=limit)

    async def evidence(self, model: str, version: int) -> Mapping[str, object]:
        return evidence_view(await self._evidence(model, version))

    async def manifest(self, model: str, version: int) -> ModelManifest:
        return await self._registry.manifest(model, version)

    def _model_state(self, name: str) -> ModelState:
        statuses = self._registry.versions(name)
        applied = self._registry.applied
        control = applied.model(name)
        routes = self._registry.routes(name)
        routing = RoutingState(
            revision=self._registry.table.revision,
            weights={} if routes is None else dict(sorted(routes.weights.items())),
            fallbacks=() if routes is None else routes.fallbacks,
            shadow_ready=routes is not None and routes.shadow is not None,
            shadow_agreement=None if routes is None or routes.shadow is None else routes.shadow.agreement,
        )
        versions = tuple(
            VersionView(s, tuple(sorted(a for a, v in control.aliases.items() if v == s.version))) for s in statuses
        )
        return ModelState(
            name=name,
            serving=self._registry.serving(name),
            control=control,
            previous_production=applied.previous_production(name),
            routing=routing,
            versions=versions,
        )

    async def _evidence(self, model: str, version: int) -> Evidence:
        """What `version` has shown since its load on this replica against the production version,
        over the same window."""
        self._registry.status(model, version)
        return await gather(self._metrics.evidence, model, version, self._registry.serving(model))

    # --- version operations ---------------------------------------------------------------------

    async def load(self, caller: Caller, model: str, version: int) -> Outcome:
        """Load `version` and keep it loaded (pinned requests can reach it; aliases may name it)."""

        async def run() -> Outcome:
            self._in_service(model)
            async with self._registry.prepare(model, [version]) as prepared:
                change = await self._registry.commit(
                    lambda s: None if version in s.model(model).loaded else s.with_loaded(model, version), prepared
                )
            return _outcome("load", model, None, None, version, change)

        return await self._run(caller, "load", model, run, to_version=version)

    async def unload(self, caller: Caller, model: str, version: int) -> Outcome:
        """Stop keeping `version` loaded; refused while an alias, a traffic weight or the shadow
        names it, or it serves the model's unpinned requests."""

        def edit(snapshot: ControlSnapshot) -> ControlSnapshot | None:
            _check_unloadable(snapshot, model, version, self._registry.serving(model))
            control = snapshot.model(model)
            if version not in control.loaded and control.retained != version:
                return None
            return snapshot.without_loaded(model, version)

        async def run() -> Outcome:
            self._registry.status(model, version)
            change = await self._registry.commit(edit)
            await change.drained
            return _outcome("unload", model, None, version, None, change)

        return await self._run(caller, "unload", model, run, from_version=version)

    async def set_alias(self, caller: Caller, model: str, alias: str, version: int) -> Outcome:
        """Point `alias` at `version`, loading it first; `production` switches unpinned traffic.

        The version is loaded, verified and warmed up before the routing changes; if that
        fails, nothing changes (409 with the reason). Naming the version already named: no-op.
        """

        async def run() -> Outcome:
            if not ALIAS_NAME.fullmatch(alias):
                raise InvalidInput(
                    "alias", detail="must start with a letter and hold only letters, digits and _.- (at most 64)"
                )
            return await self._switch(caller, model, alias, version, "alias")

        return await self._run(caller, "alias", model, run, alias=alias, to_version=version)

    async def rollback(self, caller: Caller, model: str) -> Outcome:
        """Return `production` to the version it named before its current one."""

        async def run() -> Outcome:
            previous = (await self._registry.control.read()).previous_production(model)
            if previous is None:
                raise Conflict(f"model {model!r} has no previous production version to roll back to")
            return await self._switch(caller, model, PRODUCTION, previous, "rollback")

        return await self._run(caller, "rollback", model, run, alias=PRODUCTION)

    async def delete_alias(self, caller: Caller, model: str, alias: str) -> Outcome:
        """Remove an alias (not `production`: promote another version instead)."""

        async def run() -> Outcome:
            if alias == PRODUCTION:
                raise Conflict("the production alias cannot be deleted; promote another version")
            before = self._registry.applied.alias(model, alias)
            change = await self._registry.commit(
                lambda s: s.without_alias(model, alias) if alias in s.model(model).aliases else None
            )
            await change.drained
            return _outcome("unalias", model, alias, before, None, change)

        return await self._run(caller, "unalias", model, run, alias=alias)

    # --- traffic policy, shadow, guarded promotion ------------------------------------------------

    async def set_traffic(self, caller: Caller, model: str, weights: dict[str, int]) -> Outcome:
        """Split `model`'s unpinned requests by `weights` (over aliases or versions, summing to 100).

        Every version the split names is loaded, verified and warmed up first: one that fails
        is refused (409 with the reason) and the routing does not change.
        """

        async def run() -> Outcome:
            self._in_service(model)
            stored = await self._registry.control.read()
            aliases = dict(stored.model(model).aliases)
            serving = self._registry.serving(model)
            if PRODUCTION not in aliases and serving is not None:
                aliases[PRODUCTION] = serving  # `production` is whatever serves unpinned requests
            check_weights(weights, aliases, {s.version for s in self._registry.versions(model)})
            targets = [target_version(target, aliases) for target, weight in sorted(weights.items()) if weight]
            async with self._registry.prepare(model, [v for v in targets if v is not None]) as prepared:
                change = await self._registry.commit(
                    lambda s: (
                        None
                        if s.model(model).traffic == weights
                        else s.with_model(model, s.model(model).model_copy(update={"traffic": dict(weights)}))
                    ),
                    prepared,
                )
            await change.drained
            return _outcome("traffic", model, None, None, None, change)

        return await self._run(caller, "traffic", model, run, detail=_weights_text(weights))

    async def clear_traffic(self, caller: Caller, model: str) -> Outcome:
        """Send every unpinned request to `production` again."""

        async def run() -> Outcome:
            change = await self._registry.commit(
                lambda s: (
                    None
                    if not s.model(model).traffic
                    else s.with_model(model, s.model(model).model_copy(update={"traffic": {}}))
                )
            )
            await change.drained
            return _outcome("traffic", model, None, None, None, change)

        return await self._run(caller, "traffic", model, run, detail="cleared")

    async def set_shadow(self, caller: Caller, model: str, policy: ShadowPolicy) -> Outcome:
        """Copy a share of `model`'s unpinned requests to `policy.version` (loaded first)."""

        async def run() -> Outcome:
            self._in_service(model)
            async with self._registry.prepare(model, [policy.version]) as prepared:
                change = await self._registry.commit(
                    lambda s: (
                        None
                        if s.model(model).shadow == policy
                        else s.with_model(model, s.model(model).model_copy(update={"shadow": policy}))
                    ),
                    prepared,
                )
            return _outcome("shadow", model, None, None, policy.version, change)

        return await self._run(
            caller,
            "shadow",
            model,
            run,
            to_version=policy.version,
            detail=f"share {policy.share}, "
            + (
                f"threshold {policy.threshold}"
                if policy.threshold is not None
                else "agreement by the models' task"
                if policy.tolerance is None
                else f"tolerance {policy.tolerance}"
            ),
        )

    async def clear_shadow(self, caller: Caller, model: str) -> Outcome:
        """Stop copying requests to the shadow version (it unloads unless something else wants it)."""

        async def run() -> Outcome:
            before = self._registry.applied.model(model).shadow
            change = await self._registry.commit(
                lambda s: (
                    None
                    if s.model(model).shadow is None
                    else s.with_model(model, s.model(model).model_copy(update={"shadow": None}))
                )
            )
            await change.drained
            return _outcome("shadow", model, None, None if before is None else before.version, None, change)

        return await self._run(caller, "shadow", model, run, detail="cleared")

    async def set_capture(self, caller: Caller, model: str, share: float | None) -> Outcome:
        """Capture `share` of `model`'s answered requests on every replica (None: each server's
        `capture_sample`); routing does not change."""

        async def run() -> Outcome:
            change = await self._registry.commit(
                lambda s: (
                    None
                    if s.model(model).capture == share
                    else s.with_model(model, s.model(model).model_copy(update={"capture": share}))
                )
            )
            return _outcome("capture", model, None, None, None, change)

        return await self._run(
            caller, "capture", model, run, detail="the server's default" if share is None else f"share {share}"
        )

    async def promote(
        self,
        caller: Caller,
        model: str,
        version: int,
        requirements: PromotionRequirements | None = None,
        force: bool = False,
    ) -> Outcome:
        """`production` -> `version`, refused (409 with the evidence) when `requirements` are not
        met unless `force`, which the audit log records with what fell short."""

        async def run() -> Outcome:
            shortfall: list[str] = []
            if requirements is not None:
                evidence = await self._evidence(model, version)
                shortfall = shortfalls(requirements, evidence)
                if shortfall and not force:
                    raise PromotionRefused(model, version, shortfall, evidence_view(evidence))
            outcome = await self._switch(caller, model, PRODUCTION, version, "promote")
            if not shortfall:
                return outcome
            return replace(outcome, forced=True, detail="; ".join(shortfall))

        return await self._run(caller, "promote", model, run, alias=PRODUCTION, to_version=version)

    # --- model operations (the repository extension) --------------------------------------------

    async def load_model(self, caller: Caller, model: str) -> Outcome:
        """Bring a model (back) into service after a rescan: its `production` version, or without
        one the newest version in the repository (Triton's default version policy)."""
        await self._rescan(caller, audit_noop=False)

        async def run() -> Outcome:
            started = time.perf_counter()
            before = self._registry.serving(model)
            pinned = self._registry.applied.alias(model, PRODUCTION)
            target = pinned if pinned is not None else max(s.version for s in self._registry.versions(model))

            def edit(snapshot: ControlSnapshot) -> ControlSnapshot | None:
                out = snapshot.with_stopped(model, False)
                if PRODUCTION not in out.model(model).aliases and self._registry.serving(model) != target:
                    out = self._promote(out, model, PRODUCTION, target, caller) or out
                return out

            async with self._registry.prepare(model, [target]) as prepared:
                change = await self._registry.commit(edit, prepared)
            if change.after is not None and before is not None and before != target:
                self._metrics.model_swaps.labels(model, "success").inc()
                self._metrics.model_swap_duration.labels(model).observe(time.perf_counter() - started)
            await change.drained
            return _outcome("repository_load", model, PRODUCTION, before, target, change)

        return await self._run(caller, "repository_load", model, run)

    async def unload_model(self, caller: Caller, model: str) -> Outcome:
        """Take a model out of service: every version drains and unloads; requests get 503."""

        async def run() -> Outcome:
            before = self._registry.serving(model)
            change = await self._registry.commit(
                lambda s: None if s.model(model).stopped else s.with_stopped(model, True)
            )
            await change.drained
            return _outcome("repository_unload", model, None, before, None, change)

        return await self._run(caller, "repository_unload", model, run)

    async def rescan(self, caller: Caller) -> Rescan:
        """Scan the repository again (new versions appear, vanished unloaded ones go)."""
        return await self._rescan(caller, audit_noop=True)

    # --- steps ------------------------------------------------------------------------------------

    async def _rescan(self, caller: Caller, audit_noop: bool) -> Rescan:
        """Rescan for `caller`; audited when it found something (or always, with `audit_noop`)."""
        try:
            found = await self._registry.rescan()
        except HotserveError as error:
            await self._refused(caller, "rescan", None, error)
            raise
        result: Result = "ok" if found.added or found.removed else "noop"
        if result == "ok" or audit_noop:
            self._metrics.admin_operations.labels("rescan", result).inc()
            detail = found.describe() if result == "ok" else None
            await self._append(
                AuditEntry(who=caller.name, action="rescan", result=result, detail=detail, request_id=caller.request_id)
            )
        return found

    def _promote(
        self, snapshot: ControlSnapshot, model: str, alias: str, version: int, caller: Caller
    ) -> ControlSnapshot | None:
        """`snapshot` with `alias` -> `version`; for `production` the previous one is retained
        (`keep_previous_loaded`) so a rollback needs no load. None: it names it already."""
        control = snapshot.model(model)
        current = control.aliases.get(alias)
        if current == version:
            return None
        serving = self._registry.serving(model)
        out = snapshot.with_alias(model, alias, version, by=caller.name, serving=serving)
        if alias != PRODUCTION:
            return out
        previous = current if current is not None else serving
        if not self._keep_previous:
            return out.with_retained(model, None)
        return out.with_retained(model, previous if previous != version else control.retained)

    def _in_service(self, model: str) -> None:
        self._registry.versions(model)
        if self._registry.applied.model(model).stopped:
            raise Conflict(
                f"model {model!r} is unloaded; load the model first (POST /v2/repository/models/{model}/load)"
            )

    async def _switch(self, caller: Caller, model: str, alias: str, version: int, action: str) -> Outcome:
        """Prepare (load -> verify -> warm up), commit (switch the alias), drain what left the routing."""
        self._in_service(model)
        started = time.perf_counter()
        before = self._registry.applied.alias(model, alias)
        if alias == PRODUCTION and before is None:
            before = self._registry.serving(model)
        try:
            async with self._registry.prepare(model, [version]) as prepared:
                change = await self._registry.commit(
                    lambda s: self._promote(s, model, alias, version, caller), prepared
                )
        except VersionNotReady:
            if alias == PRODUCTION:
                self._metrics.model_swaps.labels(model, "failure").inc()
            raise
        if alias == PRODUCTION:
            if self._registry.serving(model) != version:  # e.g. unloaded again meanwhile
                self._metrics.model_swaps.labels(model, "failure").inc()
                raise VersionNotReady(
                    model,
                    version,
                    self._registry.status(model, version).state,
                    "it did not take the routing; try again",
                )
            if change.after is not None:
                self._metrics.model_swaps.labels(model, "success").inc()
                self._metrics.model_swap_duration.labels(model).observe(time.perf_counter() - started)
        await change.drained
        return _outcome(action, model, alias, before, version, change)

    async def _run(
        self,
        caller: Caller,
        action: str,
        model: str,
        body: Callable[[], Awaitable[Outcome]],
        alias: str | None = None,
        from_version: int | None = None,
        to_version: int | None = None,
        detail: str | None = None,
    ) -> Outcome:
        """Run `body` under the model's lock and audit it, done or refused."""
        try:
            self._registry.versions(model)  # before taking a lock: unknown names create nothing
            async with self._registry.model_lock(model):
                outcome = await body()
        except HotserveError as error:
            await self._refused(caller, action, model, error, alias, from_version, to_version)
            raise
        result = "ok" if outcome.changed else "noop"
        self._metrics.admin_operations.labels(action, result).inc()
        await self._append(
            AuditEntry.model_validate(
                {
                    "who": caller.name,
                    "action": action,
                    "model": model,
                    "alias": outcome.alias,
                    "from": outcome.from_version,
                    "to": outcome.to_version,
                    "result": result,
                    "revision": outcome.revision,
                    "request_id": caller.request_id,
                    "forced": outcome.forced,
                    "detail": outcome.detail or detail,
                }
            )
        )
        log.info(
            "admin %s by %s: model %r%s %s -> %s (%s, revision %d)",
            action,
            caller.name,
            model,
            f" alias {outcome.alias!r}" if outcome.alias else "",
            outcome.from_version,
            outcome.to_version,
            result,
            outcome.revision,
        )
        return outcome

    async def _refused(
        self,
        caller: Caller,
        action: str,
        model: str | None,
        error: HotserveError,
        alias: str | None = None,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> None:
        failed = isinstance(error, VersionNotReady) and error.state == VersionState.FAILED.value
        result = "failed" if failed else "refused"
        self._metrics.admin_operations.labels(action, result).inc()
        log.warning("admin %s by %s on model %r %s: %s", action, caller.name, model, result, error.message)
        await self._append(
            AuditEntry.model_validate(
                {
                    "who": caller.name,
                    "action": action,
                    "model": model,
                    "alias": alias,
                    "from": from_version,
                    "to": to_version,
                    "result": result,
                    "detail": error.message,
                    "request_id": caller.request_id,
                }
            )
        )

    async def _append(self, entry: AuditEntry) -> None:
        try:
            await self._audit.append(entry)
        except OSError:
            log.exception("could not append to the audit log: %s", entry.line().decode().strip())


def _check_unloadable(snapshot: ControlSnapshot, model: str, version: int, serving: int | None) -> None:
    """Refuse (409) to unload a version the desired state still routes to: named by an alias,
    a traffic weight or the shadow, or serving unpinned requests."""
    control = snapshot.model(model)
    for alias, named in sorted(control.aliases.items()):
        if named == version and alias == PRODUCTION:
            raise Conflict(
                f"model {model!r} version {version} holds production; promote another version before unloading it"
            )
        if named == version:
            raise Conflict(
                f"model {model!r} version {version} is named by alias {alias!r}; "
                f"point the alias elsewhere or delete it first"
            )
    for target, weight in sorted(control.traffic.items()):
        if target_version(target, control.aliases) == version:
            raise Conflict(
                f"model {model!r} version {version} is named by traffic weight {target}={weight}; "
                f"change or clear the traffic split first"
            )
    if control.shadow is not None and control.shadow.version == version:
        raise Conflict(
            f"model {model!r} version {version} is the shadow (share {control.shadow.share}); stop shadowing it first"
        )
    if PRODUCTION not in control.aliases and serving == version:
        raise Conflict(
            f"model {model!r} version {version} serves its unpinned requests; "
            f"promote another version before unloading it"
        )


def evidence_view(evidence: Evidence) -> dict[str, object]:
    """The evidence as the admin API and the audit show it (ratios computed)."""
    return {
        **evidence.model_dump(),
        "observed": evidence.observed,
        "error_ratio": evidence.error_ratio,
        "p99_ratio": evidence.p99_ratio,
    }


def _weights_text(weights: dict[str, int]) -> str:
    return ", ".join(f"{target}={weight}" for target, weight in sorted(weights.items()))


def _outcome(
    action: str, model: str, alias: str | None, from_version: int | None, to_version: int | None, change: Change
) -> Outcome:
    after = change.after if change.after is not None else change.before
    return Outcome(action, model, alias, from_version, to_version, change.after is not None, after.revision)
