"""v1 feature join at the edge, over the embedded store: stored features in column order,
overrides, defaults, 404/503 answers, requests served while the store is down, admin rows."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from server.contract.manifest import FeatureSpec, FeatureView, StoredFeature
from server.features.join import FeatureJoin
from server.features.lookup import FeatureLookup
from server.features.store import EntityWrite
from server.settings import Settings
from tests.fakes import ControlledStore, FakeRegistry, FakeServedVersion, make_manifest, serving

COLUMNS = ["amount", "age", "hour", "count"]


def _view(**changes: object) -> FeatureView:
    base = FeatureView(
        name="cust",
        entity_key="customer_id",
        features=[
            StoredFeature(name="age", default=40.0),
            StoredFeature(name="count", datatype="INT64", overridable=True),
        ],
    )
    return base.model_copy(update=changes)


def _model(name: str, view: FeatureView) -> FakeServedVersion:
    spec = FeatureSpec(
        input="features",
        columns=COLUMNS,
        request_features=["amount", "hour"],
        store_features=["age", "count"],
        entity_key="customer_id",
        view=view,
    )
    manifest = make_manifest(name, [("features", "FP32", [-1, 4])], [("echo", "FP32", [-1, 4])], features=spec)
    return FakeServedVersion(manifest, lambda inputs: {"echo": inputs["features"]})


MODELS = [
    _model("strict", _view()),
    _model("lenient", _view(name="cust", on_missing_entity="defaults", on_unavailable="defaults")),
]


@pytest.fixture
def store() -> ControlledStore:
    return ControlledStore()


@pytest.fixture
async def client(settings: Settings, store: ControlledStore) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings.model_copy(update={"admin_token": SecretStr("feature-admin-t0ken"), "feature_cache_size": 0})
    for model in MODELS:  # the admin routes read views from the repository's model.json files
        (settings.model_repository / model.name / "1").mkdir(parents=True)
        model.manifest.write(settings.model_repository / model.name / "1")
    async with serving(settings, FakeRegistry(MODELS)) as c:
        app = c.app  # type: ignore[attr-defined]
        lookup = FeatureLookup(store, app.state.edge.metrics, cache_size=0, breaker_failures=1, breaker_reset_s=3600.0)
        app.state.edge.plane.features = FeatureJoin(lookup)  # the data plane joins through it
        await store.put_many([EntityWrite("c1", {"age": 31.0, "count": 7}, time.time())], _view(), None)
        yield c


async def _predict(client: httpx.AsyncClient, model: str, *records: dict[str, object]) -> httpx.Response:
    return await client.post(f"/v1/models/{model}:predict", json={"instances": list(records)})


async def test_stored_features_fill_records_in_the_models_column_order(client: httpx.AsyncClient) -> None:
    response = await _predict(
        client,
        "strict",
        {"customer_id": "c1", "amount": 5, "hour": 2},
        {"customer_id": "c1", "amount": 6, "hour": 3, "count": 9},
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [[5.0, 31.0, 2.0, 7.0], [6.0, 31.0, 3.0, 9.0]]


async def test_a_stored_feature_the_view_does_not_let_requests_override_is_refused(client: httpx.AsyncClient) -> None:
    response = await _predict(client, "strict", {"customer_id": "c1", "amount": 5, "hour": 2, "age": 1})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "instances[0].age: a stored feature of view cust:v1, looked up by "
        "customer_id; the view does not let requests override it"
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"amount": 5, "hour": 2},
            "instances[0].customer_id: missing: each record needs this entity key, by which feature view cust:v1 "
            "looks up its stored features (age, count)",
        ),
        ({"customer_id": 12, "amount": 5, "hour": 2}, "instances[0].customer_id: expected a non-empty string, got 12"),
    ],
)
async def test_records_needing_a_lookup_must_carry_a_valid_entity_key(
    client: httpx.AsyncClient, record: dict[str, object], message: str
) -> None:
    response = await _predict(client, "strict", record)
    assert (response.status_code, response.json()["error"]) == (400, message)


async def test_a_missing_entity_is_404_naming_it_or_the_defaults_as_the_view_says(client: httpx.AsyncClient) -> None:
    strict = await _predict(client, "strict", {"customer_id": "c404", "amount": 5, "hour": 2})
    assert strict.status_code == 404
    assert strict.json()["error"] == "entity 'c404' not found in feature view cust:v1: no values stored"
    # `count` has no default, so even the lenient view needs it from the request.
    lenient = await _predict(client, "lenient", {"customer_id": "c404", "amount": 5, "hour": 2, "count": 1})
    assert lenient.status_code == 200 and lenient.json()["predictions"] == [[5.0, 40.0, 2.0, 1.0]]
    required = await _predict(client, "lenient", {"customer_id": "c404", "amount": 5, "hour": 2})
    assert required.status_code == 404 and "feature 'count' has no default" in required.json()["error"]


async def test_while_the_store_is_down_lookups_get_503_or_defaults_and_requests_needing_none_are_served(
    client: httpx.AsyncClient, store: ControlledStore
) -> None:
    store.down = True
    first = await _predict(client, "strict", {"customer_id": "c1", "amount": 5, "hour": 2})
    assert first.status_code == 503 and "switched off" in first.json()["error"]
    fast = await _predict(client, "strict", {"customer_id": "c1", "amount": 5, "hour": 2})
    assert fast.status_code == 503 and "circuit open" in fast.json()["error"]
    assert len(store.calls) == 1  # the open breaker answered without asking the store
    defaults = await _predict(client, "lenient", {"customer_id": "c1", "amount": 5, "hour": 2, "count": 3})
    assert defaults.status_code == 200 and defaults.json()["predictions"] == [[5.0, 40.0, 2.0, 3.0]]
    metrics = (await client.get("/metrics")).text
    assert 'hotserve_feature_breaker_state{backend="memory"} 2.0' in metrics
    assert 'hotserve_feature_lookups_total{result="unavailable",view="cust:v1"} 2.0' in metrics


async def test_admin_feature_routes_need_the_token_and_write_valid_rows(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    url = "/admin/features/views/cust/versions/1/rows"
    body = {
        "rows": [
            {"entity": "c9", "event_time": "2026-01-01T00:00:00+00:00", "values": {"age": 50, "count": 2}},
            {"entity": "c10", "event_time": 1.0, "values": {"age": "old", "count": 2}},
            {"entity": "c11", "event_time": 1.0, "values": {"age": 1.0}},
        ]
    }
    assert (await client.post(url, json=body)).status_code == 401
    assert (await client.post(url, json=body, headers={"Authorization": "Bearer nope"})).status_code == 403
    response = await client.post(url, json=body, headers={"Authorization": "Bearer feature-admin-t0ken"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "view": "cust:v1",
        "written": 1,
        "rejected": [{"index": 1, "reason": "age: expected FP32, got 'old'"}, {"index": 2, "reason": "count: missing"}],
    }
    predicted = await _predict(client, "strict", {"customer_id": "c9", "amount": 1, "hour": 1})
    assert predicted.json()["predictions"] == [[1.0, 50.0, 1.0, 2.0]]
    unknown = await client.post(
        "/admin/features/views/nope/versions/1/rows", json=body, headers={"Authorization": "Bearer feature-admin-t0ken"}
    )
    assert unknown.status_code == 404 and "nope:v1" in unknown.json()["error"]


async def test_admin_feature_routes_do_not_exist_without_an_admin_token(settings: Settings) -> None:
    async with serving(settings, FakeRegistry(MODELS)) as c:
        response = await c.get("/admin/features/views", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404


async def test_admin_feature_rows_are_read_as_json_whatever_the_content_type(client: httpx.AsyncClient) -> None:
    rows = {"rows": [{"entity": "c12", "event_time": 1.0, "values": {"age": 40, "count": 1}}]}
    response = await client.post(
        "/admin/features/views/cust/versions/1/rows",
        content=json.dumps(rows),
        headers={"Authorization": "Bearer feature-admin-t0ken", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.json()["written"]) == (200, 1)


async def test_a_404_from_a_store_holding_nothing_of_the_view_says_how_to_fill_it(
    client: httpx.AsyncClient, store: ControlledStore
) -> None:
    await store.close()  # the embedded store as `hotserve serve` starts without HOTSERVE_FEATURE_TABLE
    response = await _predict(client, "strict", {"customer_id": "c42", "amount": 5, "hour": 2})
    assert response.status_code == 404
    assert response.json()["error"] == (
        "entity 'c42' not found in feature view cust:v1: no values stored: the feature store holds no entity of "
        "this view at all. Fill the embedded store at start-up (HOTSERVE_FEATURE_TABLE=TABLE, or `hotserve serve "
        "--feature-table TABLE`; TABLE a CSV, Parquet or demo:fraud) or a running server's with `hotserve features "
        "materialize TABLE --server URL`"
    )


async def test_start_up_warns_when_the_embedded_store_holds_nothing_of_a_repository_view(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from server.features.service import open_features
    from server.metrics.instruments import Metrics

    folder = settings.model_repository / "strict" / "1"
    folder.mkdir(parents=True)
    MODELS[0].manifest.write(folder)
    join = await open_features(settings, Metrics())
    await join.lookup.close()
    assert "the embedded store holds no entities of view(s) cust:v1" in caplog.text
    assert "HOTSERVE_FEATURE_TABLE=TABLE" in caplog.text
