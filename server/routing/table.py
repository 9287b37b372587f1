"""The routing table: which loaded version answers a request for a model (request path).

Immutable: the registry builds a new table from the control snapshot and the versions that
are READY, and publishes it by replacing one reference under its control lock. A request
routes against whichever table it found when it arrived and takes a lease on the version it
got (`ServedVersion.lease`), so publishing a new table never strands a request. Routing picks
a version (pinned, by the traffic split, or the default) and names the shadow; it runs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from server.registry.served import ServedVersion
from server.routing.traffic import Split


@dataclass(frozen=True, slots=True)
class ShadowRoute:
    """A version that gets a copy of a share of unpinned requests once the primary has answered."""

    served: ServedVersion
    share: float
    tolerance: float
    """Largest absolute output difference still counted as agreement."""
    threshold: float | None = None
    """With a decision threshold, agreement means the same side of it, row by row."""


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


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Every model's routes at one control revision."""

    revision: int = 0
    models: Mapping[str, ModelRoutes] = field(default_factory=lambda: MappingProxyType({}))

    def lookup(self, name: str, version: int | None = None, routing_key: str | None = None) -> ServedVersion | None:
        """The version a request for `name` goes to: `version` if pinned (bypassing the traffic
        policy), else the policy's pick (sticky by `routing_key`), else the default. None when
        there is none to route to (the registry explains why)."""
        routes = self.models.get(name)
        if routes is None:
            return None
        if version is not None:
            return routes.versions.get(version)
        if routes.split is not None:
            return routes.split.pick(routing_key)
        return routes.default

    def serves(self, served: ServedVersion) -> bool:
        """Whether `served` can still receive requests through this table."""
        routes = self.models.get(served.name)
        return routes is not None and routes.versions.get(served.version) is served
