"""The feature join against a real redis-server and a real `hotserve serve`: materialize, then v1
predictions equal onnxruntime run by hand on the joined vectors; TTL expiry, maximum age, view
versions, missing entities, malformed stored values; Redis stopped and restarted mid-test."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import redis

from load_tests.server_process import REPO_ROOT, ServerProcess, start_server
from onnx_models import tabular_model, write_version
from redis_process import RedisProcess, start_redis
from server import cli
from server.contract.manifest import BatchingPolicy, FeatureSpec, FeatureView, StoredFeature

pytestmark = pytest.mark.integration

COLUMNS = ["amount", "age", "hour", "count"]
NOW = time.time()


def _view(version: int = 1, count_type: str = "INT64", **changes: object) -> FeatureView:
    return FeatureView(
        name="cust",
        version=version,
        entity_key="customer_id",
        max_age_s=600,
        features=[StoredFeature(name="age"), StoredFeature(name="count", datatype=count_type)],  # type: ignore[arg-type]
    ).model_copy(update=changes)


def _write_model(repository: Path, name: str, view: FeatureView, seed: int) -> None:
    spec = FeatureSpec(
        input="features",
        columns=COLUMNS,
        request_features=["amount", "hour"],
        store_features=["age", "count"],
        entity_key="customer_id",
        view=view,
    )
    write_version(
        repository,
        name,
        1,
        tabular_model(seed),
        [("features", "FP32", [-1, 4])],
        [("score", "FP32", [-1, 1])],
        BatchingPolicy(max_batch_size=16, max_queue_delay_ms=1.0),
        spec,
    )


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("feature_repository")
    _write_model(root, "scored", _view(), seed=1)
    lenient = _view().model_copy(
        update={
            "on_missing_entity": "defaults",
            "max_age_s": None,
            "features": [
                StoredFeature(name="age", default=40.0, overridable=True),
                StoredFeature(name="count", datatype="INT64", default=2.0, overridable=True),
            ],
        }
    )
    _write_model(root, "lenient", lenient, seed=2)
    _write_model(root, "scored_v2", _view(version=2, count_type="FP32"), seed=3)
    return root


CPU = {"HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider", "HOTSERVE_INTRA_OP_THREADS": "1"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    process = start_redis()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def server(
    repository: Path, redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = start_server(
        repository,
        tmp_path_factory.mktemp("logs") / "features.log",
        env={
            **CPU,
            "HOTSERVE_REDIS_URL": redis_server.url(),
            "HOTSERVE_REDIS_TIMEOUT_MS": "200",
            "HOTSERVE_FEATURE_CACHE_SIZE": "0",  # every lookup a Redis read
            "HOTSERVE_FEATURE_BREAKER_FAILURES": "2",
            "HOTSERVE_FEATURE_BREAKER_RESET_S": "0.2",
        },
    )
    yield process
    assert process.stop() == 0, process.log()


def _materialize(
    repository: Path, redis_url: str, table: Path, *args: str, subprocess_run: bool = False
) -> subprocess.CompletedProcess[str]:
    """`hotserve features materialize` as a process, or in this one (same code, faster)."""
    argv = ["features", "materialize", str(table), "--model-repository", str(repository), *args]
    if subprocess_run:
        env = {**os.environ, "HOTSERVE_REDIS_URL": redis_url, "PYTHONPATH": str(REPO_ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "server.cli", *argv], env=env, capture_output=True, text=True, timeout=120
        )
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if redis_url:
            env.setenv("HOTSERVE_REDIS_URL", redis_url)
        code = cli.main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _table(path: Path, rows: list[tuple[str, object, object, float]]) -> Path:
    path.write_text("customer_id,age,count,ts\n" + "".join(f"{e},{a},{c},{t}\n" for e, a, c, t in rows))
    return path


def _predict(server: ServerProcess, model: str, records: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/models/{model}:predict", json={"instances": records}, timeout=10)


def _onnx(repository: Path, model: str, rows: list[list[float]]) -> np.ndarray:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"features": np.asarray(rows, dtype=np.float32)})[0]
    return out


def _request(entity: str, amount: float = 10.0, hour: float = 3.0) -> dict[str, object]:
    return {"customer_id": entity, "amount": amount, "hour": hour}


def test_materialized_features_join_into_predictions_equal_to_onnxruntime_by_hand(
    server: ServerProcess, repository: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    table = _table(
        tmp_path / "customers.csv",
        [("a1", 31.5, 4, NOW - 10), ("a2", 52.0, 9, NOW - 20), ("a1", 33.0, 5, NOW - 5), ("bad", "x", 1, NOW)],
    )
    done = _materialize(
        repository, redis_server.url(), table, "--view", "cust:v1", "--event-time-column", "ts", subprocess_run=True
    )
    assert done.returncode == 4, done.stderr  # one row rejected, the rest written
    assert "2 entities written (4 rows read, 1 rejected" in done.stdout
    assert "rejected row 4: age: expected FP32, got 'x'" in done.stdout
    records = [_request("a1", 12.0, 1.0), _request("a2", 99.0, 23.0), _request("a1", 0.5, 7.0)]
    response = _predict(server, "scored", records)
    assert response.status_code == 200, response.text
    joined = [[12.0, 33.0, 1.0, 5.0], [99.0, 52.0, 23.0, 9.0], [0.5, 33.0, 7.0, 5.0]]
    np.testing.assert_allclose(
        np.asarray(response.json()["predictions"]), _onnx(repository, "scored", joined), rtol=1e-6
    )
    # Idempotent: materializing the same table again leaves Redis exactly as it was.
    client = redis.Redis.from_url(redis_server.url())
    before = {k: client.get(k) for k in client.scan_iter("hotserve:fv:cust:v1:*")}
    assert (
        _materialize(repository, redis_server.url(), table, "--view", "cust:v1", "--event-time-column", "ts").returncode
        == 4
    )
    assert {k: client.get(k) for k in client.scan_iter("hotserve:fv:cust:v1:*")} == before
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'hotserve_feature_hits_total{layer="redis",view="cust:v1"}' in metrics
    assert 'hotserve_feature_round_trip_keys_count{backend="redis"}' in metrics


def test_a_request_carrying_overridable_features_uses_them_and_unknown_entities_get_defaults(
    server: ServerProcess, repository: Path
) -> None:
    response = _predict(server, "lenient", [{**_request("a2"), "age": 70.0}, _request("nobody")])
    assert response.status_code == 200, response.text
    expected = _onnx(repository, "lenient", [[10.0, 70.0, 3.0, 9.0], [10.0, 40.0, 3.0, 2.0]])
    np.testing.assert_allclose(np.asarray(response.json()["predictions"]), expected, rtol=1e-6)


def test_a_missing_entity_is_404_naming_it(server: ServerProcess) -> None:
    response = _predict(server, "scored", [_request("a1"), _request("ghost")])
    assert response.status_code == 404
    assert response.json() == {"error": "entity 'ghost' not found in feature view cust:v1: no values stored"}


def test_keys_expire_with_their_ttl_and_values_older_than_max_age_count_as_missing(
    server: ServerProcess, repository: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    table = _table(tmp_path / "short.csv", [("short", 1.0, 1, NOW)])
    assert (
        _materialize(
            repository, redis_server.url(), table, "--view", "cust:v1", "--event-time-column", "ts", "--ttl-s", "60"
        ).returncode
        == 0
    )
    client = redis.Redis.from_url(redis_server.url())
    assert 50_000 < client.pttl("hotserve:fv:cust:v1:short") <= 60_000
    assert _predict(server, "scored", [_request("short")]).status_code == 200
    client.pexpire("hotserve:fv:cust:v1:short", 1)  # the minute passes: Redis expires the key
    deadline = time.monotonic() + 10
    while client.exists("hotserve:fv:cust:v1:short") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _predict(server, "scored", [_request("short")]).status_code == 404

    old = _table(tmp_path / "old.csv", [("stale", 1.0, 1, time.time() - 3600)])
    assert (
        _materialize(repository, redis_server.url(), old, "--view", "cust:v1", "--event-time-column", "ts").returncode
        == 0
    )
    response = _predict(server, "scored", [_request("stale")])
    assert response.status_code == 404
    assert re.fullmatch(
        r"entity 'stale' not found in feature view cust:v1: values are 36\d\d s old, older "
        r"than the view's max_age_s of 600 s",
        response.json()["error"],
    )


def test_a_new_view_version_never_reads_keys_written_for_the_old_one(
    server: ServerProcess, repository: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    assert _predict(server, "scored", [_request("a2")]).status_code == 200  # cust:v1 has a2
    response = _predict(server, "scored_v2", [_request("a2")])
    assert response.status_code == 404 and "feature view cust:v2" in response.json()["error"]
    table = _table(tmp_path / "v2.csv", [("a2", 1.0, 2.5, NOW)])
    assert (
        _materialize(repository, redis_server.url(), table, "--view", "cust:v2", "--event-time-column", "ts").returncode
        == 0
    )
    response = _predict(server, "scored_v2", [_request("a2")])
    assert response.status_code == 200
    np.testing.assert_allclose(
        np.asarray(response.json()["predictions"]), _onnx(repository, "scored_v2", [[10.0, 1.0, 3.0, 2.5]]), rtol=1e-6
    )


def test_a_malformed_stored_value_is_an_error_naming_key_and_feature(
    server: ServerProcess, redis_server: RedisProcess
) -> None:
    redis.Redis.from_url(redis_server.url()).set(
        "hotserve:fv:cust:v1:broken", b'{"age": "forty", "count": 1, "_event_time": %d}' % NOW
    )
    response = _predict(server, "scored", [_request("broken")])
    assert response.status_code == 500
    assert response.json() == {
        "error": "stored feature value at key 'hotserve:fv:cust:v1:broken', feature 'age': expected FP32, got 'forty'"
    }
    assert _predict(server, "scored", [_request("a1")]).status_code == 200  # others still served


def test_redis_stopped_mid_test_gives_fast_clear_errors_and_recovers_after_restart(
    server: ServerProcess, repository: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    assert _predict(server, "scored", [_request("a1")]).status_code == 200
    redis_server.stop()
    # Clear errors at once: the breaker opens after two failed lookups and answers without trying
    # Redis (what it says, and its state below); how long an answer takes is the machine's.
    answers = []
    for _ in range(6):
        response = _predict(server, "scored", [_request("a1")])
        answers.append((response.status_code, response.json()["error"]))
    assert all(status == 503 for status, _ in answers), answers
    assert "feature store redis at redis://127.0.0.1" in answers[0][1]
    # Open after two failed lookups; a probe every HOTSERVE_FEATURE_BREAKER_RESET_S may answer
    # with the connection's own error in between.
    assert any("circuit open after 2 failed lookups" in error for _, error in answers), answers
    # Requests needing no lookup keep being served: all stored features inline, and v2.
    inline = _predict(server, "lenient", [{**_request("a1"), "age": 1.0, "count": 2}])
    assert inline.status_code == 200, inline.text
    v2 = httpx.post(
        f"{server.base_url}/v2/models/scored/infer",
        json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    )
    assert v2.status_code == 200
    assert 'hotserve_feature_breaker_state{backend="redis"} 2.0' in httpx.get(f"{server.base_url}/metrics").text

    redis_server.start()  # same port, empty (no persistence): materialize again
    table = _table(tmp_path / "again.csv", [("a1", 33.0, 5, NOW)])
    assert (
        _materialize(repository, redis_server.url(), table, "--view", "cust:v1", "--event-time-column", "ts").returncode
        == 0
    )
    deadline = time.monotonic() + 15
    status = 0
    while time.monotonic() < deadline:  # the breaker probes every 0.2 s and closes by itself
        status = _predict(server, "scored", [_request("a1")]).status_code
        if status == 200:
            break
    assert status == 200
    assert server.process.poll() is None  # the same server process throughout
    assert 'hotserve_feature_breaker_state{backend="redis"} 0.0' in httpx.get(f"{server.base_url}/metrics").text


def test_the_embedded_store_is_filled_from_a_table_at_start_up_and_by_materialize_through_the_server(
    repository: Path, tmp_path: Path
) -> None:
    table = _table(tmp_path / "start.csv", [("e1", 20.0, 3, NOW)])
    server = start_server(
        repository,
        tmp_path / "embedded.log",
        env={**CPU, "HOTSERVE_FEATURE_TABLE": str(table), "HOTSERVE_ADMIN_TOKEN": "let-me-in-feature-admin"},
    )
    try:
        response = _predict(server, "scored", [_request("e1")])
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(
            np.asarray(response.json()["predictions"]), _onnx(repository, "scored", [[10.0, 20.0, 3.0, 3.0]]), rtol=1e-6
        )
        assert _predict(server, "scored", [_request("e2")]).status_code == 404
        later = _table(tmp_path / "later.csv", [("e2", 21.0, 4, NOW), ("e3", "?", 4, NOW)])
        argv = ["--view", "cust:v1", "--event-time-column", "ts", "--server", server.base_url]
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HOTSERVE_ADMIN_TOKEN", "wrong")
            refused = _materialize(repository, "", later, *argv)
            assert refused.returncode == 1 and "HTTP 403" in refused.stderr
            env.setenv("HOTSERVE_ADMIN_TOKEN", "let-me-in-feature-admin")
            done = _materialize(repository, "", later, *argv)
        assert done.returncode == 4 and "1 entities written (2 rows read, 1 rejected" in done.stdout
        response = _predict(server, "scored", [_request("e2")])
        assert response.status_code == 200
        np.testing.assert_allclose(
            np.asarray(response.json()["predictions"]), _onnx(repository, "scored", [[10.0, 21.0, 3.0, 4.0]]), rtol=1e-6
        )
    finally:
        assert server.stop() == 0, server.log()


def test_materialize_through_a_server_whose_admin_api_is_off_says_so(
    server: ServerProcess, repository: Path, tmp_path: Path
) -> None:
    table = _table(tmp_path / "rows.csv", [("z1", 20.0, 3, NOW)])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOTSERVE_ADMIN_TOKEN", "a-token-the-server-does-not-have")  # it has none: its admin API is off
        refused = _materialize(
            repository, "", table, "--view", "cust:v1", "--event-time-column", "ts", "--server", server.base_url
        )
    assert refused.returncode == 1
    assert (
        "HTTP 404" in refused.stderr
        and "the server's admin API is off: start it with HOTSERVE_ADMIN_TOKEN" in refused.stderr
    )
    assert "set HOTSERVE_ADMIN_TOKEN to" not in refused.stderr
