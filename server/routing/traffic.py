"""Traffic split: which version an unpinned request goes to under its model's weights.

A policy is weights (summing to 100) over aliases (`production`, `canary`, ...) or version
numbers. `resolve_split` (control path) turns it into a `Split` over the versions READY on
this replica: a target that is not READY gives its share to `production` until it is, and
the fallback is reported. `Split.pick` (request path) draws a bucket at random, or, with a
routing key, hashes the key to a bucket (crc32, identical on every replica and restart), so
the same key gets the same version while the policy holds without storing any key.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from server.contract.aliases import PRODUCTION
from server.errors import InvalidInput
from server.registry.served import ServedVersion

BUCKETS = 10_000
"""Resolution of a split: weights are percentages, buckets are hundredths of a percent."""


def sticky_bucket(routing_key: str) -> int:
    """The bucket a routing key always lands in (stable across processes, unlike `hash()`)."""
    return zlib.crc32(routing_key.encode()) % BUCKETS


@dataclass(frozen=True, slots=True)
class Split:
    """Cumulative bucket bounds and the version each range goes to."""

    bounds: tuple[int, ...]
    targets: tuple[ServedVersion | None, ...]
    """None: that share has no ready version to go to (answered 503)."""

    def pick(self, routing_key: str | None, draw: Callable[[int], int] = random.randrange) -> ServedVersion | None:
        bucket = sticky_bucket(routing_key) if routing_key is not None else draw(BUCKETS)
        return self.targets[bisect_right(self.bounds, bucket)]


@dataclass(frozen=True, slots=True)
class ResolvedSplit:
    split: Split | None
    """None: every unpinned request goes to the default version."""
    weights: dict[int, int]
    """Effective percentage per version on this replica (after fallbacks)."""
    fallbacks: tuple[str, ...]
    """Why a target's share goes elsewhere (e.g. the canary is still loading)."""


def target_version(target: str, aliases: Mapping[str, int]) -> int | None:
    """The version a traffic target names: an alias, or a version number; None if neither."""
    if target in aliases:
        return aliases[target]
    if target.isdigit() and int(target) > 0:
        return int(target)
    return None


def check_weights(traffic: Mapping[str, int], aliases: Mapping[str, int], versions: set[int]) -> None:
    """Refuse a policy that cannot be applied as written: raises InvalidInput naming the problem."""
    if not traffic:
        return
    total = sum(traffic.values())
    if total != 100:
        raise InvalidInput("traffic", expected="weights summing to 100", got=f"{dict(traffic)} (sum {total})")
    for target, weight in traffic.items():
        if weight < 0:
            raise InvalidInput(f"traffic.{target}", expected="a weight >= 0", got=str(weight))
        version = target_version(target, aliases)
        if version is None:
            raise InvalidInput(
                f"traffic.{target}", detail=f"is neither an alias ({sorted(aliases)}) nor a version number"
            )
        if version not in versions:
            raise InvalidInput(
                f"traffic.{target}",
                detail=f"names version {version}, which is not in the repository (versions {sorted(versions)})",
            )


def resolve_split(
    traffic: Mapping[str, int],
    aliases: Mapping[str, int],
    routable: Mapping[int, ServedVersion],
    default: ServedVersion | None,
) -> ResolvedSplit:
    """The split this replica can serve now; shares of targets that are not READY go to `default`."""
    weights: dict[int, int] = {}
    if not traffic:
        if default is not None:
            weights[default.version] = 100
        return ResolvedSplit(None, weights, ())
    fallbacks: list[str] = []
    for target, weight in sorted(traffic.items()):
        if weight == 0:
            continue
        version = target_version(target, aliases)
        if version is not None and version in routable:
            weights[version] = weights.get(version, 0) + weight
            continue
        named = target if version is None else f"{target} (version {version})"
        if default is None:
            fallbacks.append(
                f"{named} is not ready and there is no {PRODUCTION} version: its {weight}% is refused (503)"
            )
            continue
        fallbacks.append(
            f"{named} is not ready on this replica: its {weight}% goes to {PRODUCTION} (version {default.version})"
        )
        weights[default.version] = weights.get(default.version, 0) + weight
    bounds: list[int] = []
    targets: list[ServedVersion | None] = []
    edge = 0
    for version, weight in sorted(weights.items()):
        edge += weight * BUCKETS // 100
        bounds.append(edge)
        targets.append(routable.get(version) or default)
    if edge < BUCKETS:  # shares with nowhere to go
        bounds.append(BUCKETS)
        targets.append(None)
    return ResolvedSplit(Split(tuple(bounds), tuple(targets)), weights, tuple(fallbacks))
