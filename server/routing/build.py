"""Building the routing table: pure decisions from the desired state and the ready versions
(control path, the "decide" half; `server/registry/registry.py` loads, detaches and publishes).

Like the batcher's `policy.py`, nothing here owns a clock, a lock or a load: given one model's
`ModelControl`, the versions its repository holds and the versions READY now, these functions
say which version serves unpinned requests, which versions stay loaded and what the model's
`ModelRoutes` are, with the reasons an operator should read when the policy cannot be served as
written (`notes`). The registry logs the notes; tests call these without a server.

Which version serves unpinned requests: the one `production` names. If that one is not ready,
the version serving before keeps serving (at start-up there is none: the model serves nothing
rather than a version the operator did not choose). Without `production` the version serving
keeps serving, else the newest ready one. A stopped model serves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from types import MappingProxyType

from server.registry.control_state import PRODUCTION, ModelControl
from server.registry.served import ServedVersion
from server.routing.agreement import resolve_agreement
from server.routing.table import ModelRoutes, RoutingTable, ShadowRoute
from server.routing.traffic import resolve_split


@dataclass(frozen=True, slots=True)
class Decision:
    """A decision and what an operator should be told about it (logged by the registry)."""

    served: ServedVersion | None
    notes: tuple[str, ...] = ()


def default_version(
    control: ModelControl,
    versions: Set[int],
    ready: Mapping[int, ServedVersion],
    current: ServedVersion | None,
) -> Decision:
    """The version the model's unpinned requests go to.

    `versions`: what the repository holds; `ready`: the READY versions; `current`: the version
    serving unpinned requests in the published table (None if none).
    """
    if control.stopped:
        return Decision(None)
    still_serving = current if current is not None and ready.get(current.version) is current else None
    pinned = control.aliases.get(PRODUCTION)
    if pinned is not None and pinned in versions:
        if pinned in ready:
            return Decision(ready[pinned])
        if still_serving is not None:
            return Decision(
                still_serving,
                (f"production version {pinned} is not ready; version {still_serving.version} keeps serving",),
            )
        return Decision(None, (f"production version {pinned} could not be loaded; the model answers 503 until it is",))
    if still_serving is not None:
        return Decision(still_serving)
    if ready:
        return Decision(ready[max(ready)])
    return Decision(None, ("no version could be loaded; it answers 503 until one is",))


def needs_newest(
    control: ModelControl, versions: Set[int], ready: Mapping[int, ServedVersion], current: ServedVersion | None
) -> bool:
    """Whether the registry should load the newest loadable version: no `production` in the
    repository names one and nothing serves unpinned requests now (start-up, a new model)."""
    if control.stopped or control.aliases.get(PRODUCTION) in versions:
        return False
    return current is None or ready.get(current.version) is not current


def keep_loaded(control: ModelControl, versions: Set[int], default: ServedVersion | None) -> set[int]:
    """The versions that stay loaded: what the state wants (aliased, loaded, retained, traffic
    targets, shadow) and the default version; everything else loaded drains and unloads."""
    keep = control.wanted() & set(versions)
    if default is not None:
        keep.add(default.version)
    return keep


def model_routes(
    name: str,
    control: ModelControl,
    versions: Set[int],
    ready: Mapping[int, ServedVersion],
    default: ServedVersion | None,
) -> tuple[ModelRoutes, tuple[str, ...]]:
    """`name`'s routes over its READY versions, and the notes on what cannot be served as written."""
    notes = [
        f"alias {alias!r} names version {version}, which is not in the repository "
        f"(versions {sorted(versions)}); ignored"
        for alias, version in sorted(control.aliases.items())
        if version not in versions and not control.stopped
    ]
    aliases = {} if control.stopped else {a: v for a, v in control.aliases.items() if v in versions}
    traffic = {} if control.stopped else control.traffic
    targets = aliases if default is None else {PRODUCTION: default.version, **aliases}
    resolved = resolve_split(traffic, targets, ready, default)
    notes += [f"traffic: {fallback}" for fallback in resolved.fallbacks]
    shadow: ShadowRoute | None = None
    if control.shadow is not None and not control.stopped:
        shadowed = ready.get(control.shadow.version)
        if shadowed is None:
            notes.append(f"shadow version {control.shadow.version} is not ready; no copies are sent")
        else:
            policy = control.shadow
            agreement, agreement_notes = resolve_agreement(
                policy.tolerance, policy.threshold, shadowed.manifest, None if default is None else default.manifest
            )
            notes += agreement_notes
            shadow = ShadowRoute(shadowed, policy.share, agreement)
    routes = ModelRoutes(
        name=name,
        default=default,
        aliases=MappingProxyType(aliases),
        versions=MappingProxyType(dict(ready)),
        split=resolved.split,
        weights=MappingProxyType(resolved.weights),
        fallbacks=resolved.fallbacks,
        shadow=shadow,
    )
    return routes, tuple(notes)


def routing_table(revision: int, routes: Mapping[str, ModelRoutes]) -> RoutingTable:
    """The immutable table published in one reference swap."""
    return RoutingTable(revision=revision, models=MappingProxyType(dict(routes)))
