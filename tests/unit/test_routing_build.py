"""The routing decisions as pure functions of (desired state, ready versions): no server, no loads."""

from __future__ import annotations

from server.metrics.instruments import Metrics
from server.registry.control_state import ControlSnapshot, ModelControl, ShadowPolicy
from server.registry.served import ServedVersion
from server.routing.build import default_version, keep_loaded, model_routes, needs_newest, routing_table
from tests.fakes import EchoRuntime, fake_manifest

VERSIONS = {1, 2, 3}


def served(version: int) -> ServedVersion:
    return ServedVersion(fake_manifest("m", version), EchoRuntime(), Metrics())


def control(**fields: object) -> ModelControl:
    return ModelControl.model_validate(fields)


def test_production_serves_when_ready_and_the_serving_version_stays_while_it_is_not() -> None:
    v1, v2 = served(1), served(2)
    pinned = control(aliases={"production": 2})
    assert default_version(pinned, VERSIONS, {1: v1, 2: v2}, current=v1).served is v2
    kept = default_version(pinned, VERSIONS, {1: v1}, current=v1)
    assert kept.served is v1
    assert kept.notes == ("production version 2 is not ready; version 1 keeps serving",)
    at_start = default_version(pinned, VERSIONS, {1: v1}, current=None)
    assert at_start.served is None  # never a version the operator did not choose
    assert at_start.notes == ("production version 2 could not be loaded; the model answers 503 until it is",)


def test_without_production_the_serving_version_stays_else_the_newest_ready_one() -> None:
    v1, v2 = served(1), served(2)
    free = control()
    assert default_version(free, VERSIONS, {1: v1, 2: v2}, current=v1).served is v1
    assert default_version(free, VERSIONS, {1: v1, 2: v2}, current=None).served is v2
    stale = served(1)  # an earlier load of v1, no longer the one in the slot
    assert default_version(free, VERSIONS, {1: v1, 2: v2}, current=stale).served is v2
    nothing = default_version(free, VERSIONS, {}, current=None)
    assert nothing.served is None and nothing.notes == ("no version could be loaded; it answers 503 until one is",)
    assert default_version(control(stopped=True), VERSIONS, {1: v1}, current=v1).served is None


def test_an_alias_naming_a_version_not_in_the_repository_is_ignored_as_production() -> None:
    v1 = served(1)
    missing = control(aliases={"production": 9})
    assert default_version(missing, VERSIONS, {1: v1}, current=None).served is v1
    routes, notes = model_routes("m", missing, VERSIONS, {1: v1}, v1)
    assert dict(routes.aliases) == {}
    assert notes == (
        "alias 'production' names version 9, which is not in the repository (versions [1, 2, 3]); ignored",
    )


def test_the_newest_version_is_loaded_only_when_nothing_serves_and_production_names_none() -> None:
    v1 = served(1)
    assert needs_newest(control(), VERSIONS, {}, current=None)
    assert not needs_newest(control(), VERSIONS, {1: v1}, current=v1)
    assert not needs_newest(control(aliases={"production": 1}), VERSIONS, {}, current=None)
    assert not needs_newest(control(stopped=True), VERSIONS, {}, current=None)


def test_what_stays_loaded_is_what_the_state_names_and_the_default() -> None:
    state = control(aliases={"production": 1, "canary": 2}, traffic={"production": 90, "3": 10}, shadow={"version": 2})
    assert keep_loaded(state, VERSIONS, served(1)) == {1, 2, 3}
    assert keep_loaded(control(loaded=[2], retained=9), VERSIONS, served(3)) == {2, 3}
    assert keep_loaded(control(stopped=True, loaded=[2]), VERSIONS, None) == set()


def test_routes_split_over_ready_versions_with_the_shadow_and_say_what_is_not_served() -> None:
    v1, v2 = served(1), served(2)
    state = control(
        aliases={"production": 1, "canary": 3},
        traffic={"production": 90, "canary": 10},
        shadow=ShadowPolicy(version=2, share=0.5),
    )
    routes, notes = model_routes("m", state, VERSIONS, {1: v1, 2: v2}, v1)
    assert routes.default is v1 and dict(routes.versions) == {1: v1, 2: v2}
    assert dict(routes.weights) == {1: 100}  # the canary is not ready: its share goes to production
    assert notes == (
        "traffic: canary (version 3) is not ready on this replica: its 10% goes to production (version 1)",
    )
    assert routes.shadow is not None and routes.shadow.served is v2 and routes.shadow.share == 0.5
    ready, _ = model_routes("m", state.model_copy(update={"shadow": ShadowPolicy(version=3)}), VERSIONS, {1: v1}, v1)
    assert ready.shadow is None
    table = routing_table(4, {"m": routes})
    assert table.revision == 4 and table.lookup("m", 2) is v2 and table.lookup("m", 3) is None


def test_a_stopped_model_routes_nothing() -> None:
    state = ControlSnapshot().with_alias("m", "production", 1).with_stopped("m", True).model("m")
    routes, notes = model_routes("m", state.model_copy(update={"shadow": ShadowPolicy(version=1)}), VERSIONS, {}, None)
    assert routes.default is None and dict(routes.aliases) == {} and routes.shadow is None and notes == ()
    assert routing_table(1, {"m": routes}).lookup("m") is None
