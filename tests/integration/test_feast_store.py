"""Features that Feast itself materialized, served by a real `hotserve serve` reading Feast's Redis
layout: joined vectors equal Feast's own `get_online_features`; nulls, absent entities and stale
rows behave as the view says. Feast (pinned) lives in `.venv-feast` (`scripts/setup-feast-env.sh`),
never beside the server; the online store is the test Redis database."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import redis
from onnx import TensorProto, helper

from load_tests.feast_repo import FEAST_PYTHON, FeastView, apply_and_materialize, online_features, write_repository
from load_tests.server_process import ServerProcess, start_server
from onnx_models import write_version
from server import cli
from server.contract.manifest import FeastSource, FeatureSpec, FeatureView, StoredFeature

pytestmark = pytest.mark.integration

NOW = time.time()
DAY = 86400.0
PROJECT = f"hotserve_it_{os.getpid()}"
DRIVER_FEATURES = [
    ("conv_rate", "Float32"),
    ("acc_rate", "Float64"),
    ("trips", "Int64"),
    ("rating", "Int32"),
    ("active", "Bool"),
]
DRIVER_COLUMNS = [name for name, _ in DRIVER_FEATURES] + ["avg_speed"]
DEFAULT = -1.0
DATATYPES = {
    "conv_rate": "FP32",
    "acc_rate": "FP64",
    "trips": "INT64",
    "rating": "INT32",
    "active": "BOOL",
    "avg_speed": "FP64",
}
"""hotserve's types of the Feast features (a Feast Bool is a BOOL feature, never an FP32 one)."""


def _views() -> list[FeastView]:
    stats = [
        {"conv_rate": 0.5, "acc_rate": 0.25, "trips": 12, "rating": -3, "active": True, "event_timestamp": NOW - 60},
        {"conv_rate": None, "acc_rate": 0.75, "trips": None, "rating": 4, "active": False, "event_timestamp": NOW - 90},
        {"conv_rate": 0.1, "acc_rate": 0.2, "trips": 3, "rating": 5, "active": True, "event_timestamp": NOW - 10 * DAY},
        {"conv_rate": 0.9, "acc_rate": 0.125, "trips": 2**40, "rating": 1, "active": True, "event_timestamp": NOW - 5},
    ]
    return [
        FeastView(
            "driver_stats",
            "driver_id",
            "INT64",
            DRIVER_FEATURES,
            [{"driver_id": key, **row} for key, row in zip((1001, 1002, 1003, -7), stats)],
        ),
        FeastView(
            "driver_extra",
            "driver_id",
            "INT64",
            [("avg_speed", "Float64")],
            [
                {"driver_id": 1001, "avg_speed": 61.5, "event_timestamp": NOW - 30},
                {"driver_id": -7, "avg_speed": 12.0, "event_timestamp": NOW - 30},
            ],
        ),
        FeastView(
            "customer_profile",
            "customer_id",
            "STRING",
            [("spend", "Float64"), ("orders", "Int64")],
            [
                {"customer_id": "c-1", "spend": 10.5, "orders": 3, "event_timestamp": NOW - 30},
                {"customer_id": "c-ü2", "spend": 99.25, "orders": 40, "event_timestamp": NOW - 40},
            ],
        ),
    ]


def _identity(width: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["features"], ["joined"])],
        "identity",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("joined", TensorProto.FLOAT, ["n", width])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _driver_view(lenient: bool) -> FeatureView:
    refs = {name: f"driver_stats:{name}" for name, _ in DRIVER_FEATURES} | {"avg_speed": "driver_extra:avg_speed"}
    return FeatureView(
        name="drivers_lenient" if lenient else "drivers",
        entity_key="driver_id",
        entity_key_type="INT64",
        max_age_s=DAY,
        on_missing_entity="defaults" if lenient else "error",
        features=[
            StoredFeature(name=n, datatype=DATATYPES[n], default=DEFAULT if lenient else None)  # type: ignore[arg-type]
            for n in DRIVER_COLUMNS
        ],
        feast=FeastSource(project=PROJECT, features=refs),
    )


def _write_driver_model(repository: Path, name: str, lenient: bool) -> None:
    spec = FeatureSpec(
        input="features",
        columns=DRIVER_COLUMNS,
        request_features=[],
        store_features=DRIVER_COLUMNS,
        entity_key="driver_id",
        view=_driver_view(lenient),
    )
    width = len(DRIVER_COLUMNS)
    write_version(
        repository,
        name,
        1,
        _identity(width),
        [("features", "FP32", [-1, width])],
        [("joined", "FP32", [-1, width])],
        features=spec,
    )


def _import_customer_model(repository: Path, feast_repo: Path, work: Path) -> None:
    """`hotserve import` with the --feast-* options: the view's Feast source from feature_store.yaml."""
    onnx.save(_identity(3), work / "customers.onnx")
    spec = '{"request_features": ["amount"], "store_features": ["spend", "orders"], "entity_key": "customer_id"}'
    argv = [
        "import",
        str(work / "customers.onnx"),
        "--name",
        "customers",
        "--repository",
        str(repository),
        "--feature-spec",
        spec,
        "--feast-repo",
        str(feast_repo),
        "--feast-view",
        "customer_profile",
        "--feast-join-key-type",
        "STRING",
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0, out.getvalue()


@pytest.fixture(scope="module")
def redis_url() -> str:
    return os.environ.get("HOTSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Path]:
    if not FEAST_PYTHON.exists():
        if os.environ.get("HOTSERVE_REQUIRE_FEAST"):
            pytest.fail(f"{FEAST_PYTHON} missing: scripts/setup-feast-env.sh did not run")
        pytest.skip(f"Feast is not installed in {FEAST_PYTHON.parent.parent} (run scripts/setup-feast-env.sh)")
    folder = write_repository(tmp_path_factory.mktemp("feast") / "repo", PROJECT, redis_url, _views())
    apply_and_materialize(folder, NOW - 30 * DAY, NOW)
    yield folder
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=b"*" + PROJECT.encode()):
        client.delete(key)


@pytest.fixture(scope="module")
def feast_answers(feast_repo: Path) -> dict[str, list[dict[str, Any]]]:
    """Feast's own `get_online_features` for every entity the tests ask hotserve about (one process)."""
    driver_refs = [f"driver_stats:{n}" for n, _ in DRIVER_FEATURES] + ["driver_extra:avg_speed"]
    return {
        "drivers": online_features(feast_repo, driver_refs, [{"driver_id": k} for k in (1001, 1002, -7, 1003, 9999)]),
        "customers": online_features(
            feast_repo,
            ["customer_profile:spend", "customer_profile:orders"],
            [{"customer_id": k} for k in ("c-ü2", "c-1")],
        ),
    }


@pytest.fixture(scope="module")
def server(feast_repo: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("feast_models")
    _write_driver_model(repository, "drivers", lenient=False)
    _write_driver_model(repository, "drivers_lenient", lenient=True)
    _import_customer_model(repository, feast_repo, tmp_path_factory.mktemp("import"))
    process = start_server(
        repository,
        tmp_path_factory.mktemp("logs") / "feast.log",
        env={
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
            "HOTSERVE_FEAST_REDIS_URL": redis_url,
            "HOTSERVE_REDIS_TIMEOUT_MS": "5000",  # a slow shared machine is not a Redis outage
            "HOTSERVE_FEATURE_CACHE_SIZE": "0",  # every lookup reads Feast's hashes
        },
    )
    yield process
    assert process.stop() == 0, process.log()


def _predict(server: ServerProcess, model: str, records: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/models/{model}:predict", json={"instances": records}, timeout=10)


def _vector(row: dict[str, Any], columns: list[str], default: float | None = None) -> list[float]:
    out = []
    for column in columns:
        value = row[column]
        assert value is not None or default is not None, f"{column} is null in Feast's answer {row}"
        out.append(float(default if value is None else value))
    return out


def test_joined_vectors_equal_feasts_own_online_features(
    server: ServerProcess, feast_answers: dict[str, list[dict[str, Any]]]
) -> None:
    fresh = feast_answers["drivers"][0::2][:2]  # 1001 and -7: every feature set, in both Feast views
    response = _predict(server, "drivers", [{"driver_id": 1001}, {"driver_id": "-7"}])
    assert response.status_code == 200, response.text
    expected = np.asarray([_vector(row, DRIVER_COLUMNS) for row in fresh], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(response.json()["predictions"], dtype=np.float32), expected)

    customers = feast_answers["customers"]
    response = _predict(
        server, "customers", [{"customer_id": "c-ü2", "amount": 2.5}, {"customer_id": "c-1", "amount": 0}]
    )
    assert response.status_code == 200, response.text
    expected = np.asarray(
        [[2.5, *_vector(customers[0], ["spend", "orders"])], [0.0, *_vector(customers[1], ["spend", "orders"])]],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(np.asarray(response.json()["predictions"], dtype=np.float32), expected)


def test_null_values_and_absent_entities_get_the_views_defaults_never_zero(
    server: ServerProcess, feast_answers: dict[str, list[dict[str, Any]]]
) -> None:
    by_driver = {row["driver_id"]: row for row in feast_answers["drivers"]}
    assert by_driver[1002]["conv_rate"] is None and by_driver[1002]["avg_speed"] is None  # Feast: null, absent
    assert all(by_driver[9999][c] is None for c in DRIVER_COLUMNS)
    response = _predict(server, "drivers_lenient", [{"driver_id": 1002}, {"driver_id": 9999}])
    assert response.status_code == 200, response.text
    expected = [_vector(by_driver[1002], DRIVER_COLUMNS, DEFAULT), [DEFAULT] * len(DRIVER_COLUMNS)]
    np.testing.assert_array_equal(
        np.asarray(response.json()["predictions"], dtype=np.float32), np.asarray(expected, dtype=np.float32)
    )


def test_without_defaults_a_null_feature_and_an_absent_entity_are_404s_naming_them(server: ServerProcess) -> None:
    response = _predict(server, "drivers", [{"driver_id": 1002}])
    assert response.status_code == 404
    assert response.json() == {
        "error": "entity '1002' not found in feature view drivers:v1: feature 'conv_rate' not stored"
    }
    response = _predict(server, "drivers", [{"driver_id": 9999}])
    assert response.status_code == 404
    assert response.json() == {"error": "entity '9999' not found in feature view drivers:v1: no values stored"}


def test_rows_older_than_the_views_max_age_are_missing(
    server: ServerProcess, feast_answers: dict[str, list[dict[str, Any]]]
) -> None:
    stale = feast_answers["drivers"][3]
    assert stale["driver_id"] == 1003 and stale["trips"] == 3  # Feast still serves the 10-day-old row
    response = _predict(server, "drivers", [{"driver_id": 1003}])
    assert response.status_code == 404
    assert "values are 864" in response.json()["error"] and "max_age_s of 86400 s" in response.json()["error"]
    response = _predict(server, "drivers_lenient", [{"driver_id": 1003}])
    assert response.status_code == 200
    assert response.json()["predictions"] == [[DEFAULT] * len(DRIVER_COLUMNS)]


def test_lookups_are_counted_under_the_feast_backend(server: ServerProcess) -> None:
    assert _predict(server, "drivers", [{"driver_id": 1001}, {"driver_id": -7}]).status_code == 200
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'hotserve_feature_hits_total{layer="feast",view="drivers:v1"}' in metrics
    assert 'hotserve_feature_round_trip_keys_count{backend="feast"}' in metrics
