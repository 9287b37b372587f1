"""Traffic split: weights over ready versions, fallbacks, stickiness, validation; shadow comparison."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from server.errors import InvalidInput
from server.metrics.instruments import Metrics
from server.registry.served import ServedVersion
from server.routing.agreement import Agreement
from server.routing.traffic import BUCKETS, check_weights, resolve_split, sticky_bucket
from server.shadow import agrees
from tests.fakes import EchoRuntime, fake_manifest


def served(version: int) -> ServedVersion:
    return ServedVersion(fake_manifest("m", version), EchoRuntime(), Metrics())


def test_split_follows_the_weights_over_many_unkeyed_requests() -> None:
    v1, v2 = served(1), served(2)
    resolved = resolve_split({"production": 90, "canary": 10}, {"production": 1, "canary": 2}, {1: v1, 2: v2}, v1)
    assert resolved.weights == {1: 90, 2: 10} and resolved.fallbacks == ()
    assert resolved.split is not None
    draw = random.Random(7).randrange
    picks = Counter(resolved.split.pick(None, draw).version for _ in range(20_000))
    assert abs(picks[2] / 20_000 - 0.10) < 0.01


def test_same_routing_key_gets_the_same_version_and_keys_spread_by_weight() -> None:
    v1, v2 = served(1), served(2)
    split = resolve_split({"1": 50, "2": 50}, {}, {1: v1, 2: v2}, v1).split
    assert split is not None
    assert {split.pick("customer-42").version for _ in range(50)} == {split.pick("customer-42").version}
    picks = Counter(split.pick(f"customer-{i}").version for i in range(10_000))
    assert abs(picks[1] / 10_000 - 0.5) < 0.03
    assert sticky_bucket("customer-42") == sticky_bucket("customer-42") < BUCKETS


def test_a_target_that_is_not_ready_gives_its_share_to_production_and_says_so() -> None:
    v1 = served(1)
    resolved = resolve_split({"production": 90, "canary": 10}, {"production": 1, "canary": 2}, {1: v1}, v1)
    assert resolved.weights == {1: 100}
    assert resolved.fallbacks == (
        "canary (version 2) is not ready on this replica: its 10% goes to production (version 1)",
    )
    assert resolved.split is not None and resolved.split.pick("any").version == 1


def test_without_a_production_version_an_unready_share_is_refused() -> None:
    v2 = served(2)
    resolved = resolve_split({"1": 50, "2": 50}, {}, {2: v2}, None)
    assert resolved.split is not None and resolved.weights == {2: 50}
    picks = {resolved.split.pick(f"k{i}") for i in range(200)}
    assert picks == {v2, None}


@pytest.mark.parametrize(
    "traffic, message",
    [
        ({"production": 90, "canary": 20}, "traffic: expected weights summing to 100, got"),
        ({"production": 90, "blue": 10}, "traffic.blue: is neither an alias"),
        ({"production": 90, "7": 10}, "traffic.7: names version 7, which is not in the repository"),
    ],
)
def test_policies_that_cannot_apply_are_refused_with_the_reason(traffic: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_weights(traffic, {"production": 1, "canary": 2}, {1, 2})


def test_shadow_agreement_by_tolerance_and_by_decision_threshold() -> None:
    primary = {"p": np.array([0.2, 0.7], np.float32)}
    close = {"p": np.array([0.20001, 0.69999], np.float32)}
    within = Agreement("tolerance", tolerance=1e-3)
    assert agrees(primary, close, within)[0]
    far = {"p": np.array([0.3, 0.6], np.float32)}
    ok, largest = agrees(primary, far, within)
    assert not ok and largest == pytest.approx(0.1, abs=1e-6)
    decision = Agreement("decision", threshold=0.5, shadow_threshold=0.5)
    assert agrees(primary, far, decision)[0]  # same decisions
    assert not agrees(primary, {"p": np.array([0.6, 0.7], np.float32)}, decision)[0]
    assert not agrees(primary, {"q": primary["p"]}, Agreement("tolerance", tolerance=1.0))[0]  # missing output
