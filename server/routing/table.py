"""The routing table: which loaded version answers a request for a model (request path).

Immutable: the registry builds a new table from the control snapshot and the versions that
are READY, and publishes it by replacing one reference under its control lock. A request
routes against whichever table it found when it arrived (`RoutingTable.route`) and the data
plane takes a lease on what it got (`ServedVersion.lease`), so publishing a new table never
strands a request. Routing picks a version (pinned, by the traffic split, or the default) and
names the shadow; it runs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from server.registry.served import ServedVersion
from server.routing.agreement import Agreement
from server.routing.traffic import Split


@dataclass(frozen=True, slots=True)
class ShadowRoute:
    """A version that gets a copy of a share of unpinned requests once the primary has answered."""

    served: ServedVersion
    share: float
    agreement: Agreement = Agreement()
    """When the shadow's answer counts as the primary's (resolved from the shadow policy and the
    models' prediction contracts when the table is built)."""


@dataclass(frozen=True, slots=True)
class ModelRoutes:
    """One model's routable versions and where unpinned requests go."""

    name: str
    default: ServedVersion | None
    """Where unpinned requests go (the `production` version); None: nothing can serve them."""
    versions: Mapping[int, ServedVersion]
    """Every READY version, for requests pinned to one (`/versions/{v}`)."""
    aliases: Mapping[str, int]
    """Alias -> version, as applied from the control snapshot."""
    split: Split | None = None
    """The traffic policy over READY versions; None: unpinned requests go to `default`."""
    weights: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    """Effective share (percent) of unpinned requests per version on this replica."""
    fallbacks: tuple[str, ...] = ()
    """Why part of the policy is not served as written here (a target not ready yet)."""
    shadow: ShadowRoute | None = None
    default_route: Route | None = field(init=False, default=None)
    """`Route(default, shadow)`, built once: an unpinned request without a split allocates nothing."""

    def __post_init__(self) -> None:
        if self.default is not None:
            object.__setattr__(self, "default_route", Route(self.default, self.shadow))

    @property
    def entity_field(self) -> str | None:
        """The v1 record field (the entity key) that keeps requests on one version under the
        split, or None when no split is set or the production version has no entity key."""
        if self.split is None or self.default is None:
            return None
        features = self.default.manifest.features
        return None if features is None else features.entity_key


class Route(NamedTuple):
    """Where one request goes, decided before its body is read (a NamedTuple: built per request)."""

    primary: ServedVersion | None
    """The version that answers; None only while the pick waits for the entity key (`split`)."""
    shadow: ShadowRoute | None = None
    """Where copies of the model's unpinned requests go (the share is not drawn yet)."""
    split: Split | None = None
    """Set when the pick waits for the request's entity key: the split that picks, whose every
    target is leased until it does."""
    entity_field: str | None = None
    """The v1 record field whose value (in the first record) is that key."""


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Every model's routes at one control revision."""

    revision: int = 0
    models: Mapping[str, ModelRoutes] = field(default_factory=lambda: MappingProxyType({}))

    def route(
        self, name: str, version: int | None = None, routing_key: str | None = None, by_entity: bool = False
    ) -> Route | None:
        """Where a request for `name` goes: `version` if pinned (bypassing the traffic policy and
        the shadow), else the policy's pick (sticky by `routing_key`), else the default. With
        `by_entity` (the request carries v1 records), no routing key and a split whose model has
        an entity key, the pick waits for that key: the route names the split instead of a
        primary. None when there is nothing to route to (the registry explains why)."""
        routes = self.models.get(name)
        if routes is None:
            return None
        if version is not None:
            served = routes.versions.get(version)
            return None if served is None else Route(served)
        split = routes.split
        if split is None:
            return routes.default_route
        if by_entity and routing_key is None:
            entity_field = routes.entity_field
            if entity_field is not None:
                return Route(None, routes.shadow, split, entity_field)
        served = split.pick(routing_key)
        return None if served is None else Route(served, routes.shadow)

    def lookup(self, name: str, version: int | None = None, routing_key: str | None = None) -> ServedVersion | None:
        """The version `route` picks, when there is one (metadata, readiness: no lease, no body)."""
        route = self.route(name, version, routing_key)
        return None if route is None else route.primary

    def serves(self, served: ServedVersion) -> bool:
        """Whether `served` can still receive requests through this table."""
        routes = self.models.get(served.name)
        return routes is not None and routes.versions.get(served.version) is served
