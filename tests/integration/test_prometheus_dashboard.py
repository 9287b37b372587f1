"""The chart's dashboard and alerts against a real Prometheus scraping a real `hotserve serve`.

Prometheus (the Debian package's server, on 127.0.0.1) scrapes the server every second and
evaluates the chart's rule file. The server captures every answered request to a local sink in
the test's folder (files rotated every half second) and holds three models:

- `fraud` (drift): after the first scrape, traffic from the training distribution goes to version
  1 and a stream with `amount` tripled to version 2;
- `scored` (control path and features): a feature-view model whose entity rows the embedded store
  loads from `HOTSERVE_FEATURE_TABLE`. Through the admin API, version 2 is promoted and version 3
  set as shadow before the first scrape; after it, v1 records look up fresh entities, a promotion
  to the corrupt version 4 fails and one back to version 1 succeeds (load, swap, drain, unload);
- `graded` (labels and live quality): a binary model with a prediction contract and a training
  figure; requests of several rows with our own request ids, and their labels (drawn from the
  scores: a calibrated model, so live quality is well above the training figure) posted through
  the labels route, before the first scrape and after it.

Every series exists before the first scrape (Prometheus takes a new series' first sample as its
start) and changes after it, so every dashboard query returns a real number, not NaN. The drift
alerts' expressions hold for exactly the shifted feature and version (pending in Prometheus), the
load- and swap-failure alerts for `scored`, every other alert is silent over metrics that do
exist, and `promtool test rules` fed the series Prometheus scraped fires the drift alerts with the
labels and annotations Prometheus rendered. Nothing waits on a clock: each check polls
Prometheus' API until its data is there.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from fraud_scorer import drift_report, fraud_rows, score_stream, shifted, write_fraud_repository
from load_tests.server_process import ServerProcess, free_port
from onnx_models import TAB_COLUMNS, tabular_model, write_corrupt, write_version
from server.contract.manifest import (
    BatchingPolicy,
    FeatureSpec,
    FeatureView,
    ModelManifest,
    PredictionContract,
    StoredFeature,
)
from tests.deploy.conftest import find_tool, run
from tests.deploy.monitoring_files import DASHBOARDS, METRIC_NAME, RULE_FILES, alert_rules, load_dashboard, panel_exprs

pytestmark = pytest.mark.integration

STREAM_ROWS = 3_000
PRIMING_ROWS = 300
ADMIN_TOKEN = secrets.token_hex(16)
SERVER_ENV = {
    "HOTSERVE_DRIFT_INTERVAL_S": "0.2",
    "HOTSERVE_DRIFT_MIN_ROWS": "1000",
    "HOTSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
    "HOTSERVE_KEEP_PREVIOUS_LOADED": "false",  # a promotion drains and unloads the old version
    "HOTSERVE_CAPTURE_ROTATE_AGE_S": "0.5",  # files written while traffic flows, not only at exit
    "HOTSERVE_QUALITY_REFRESH_S": "0.2",
}
GRADED_REQUESTS = 10
"""`graded` requests per phase (before the first scrape, after it), each of GRADED_ROWS rows."""
GRADED_ROWS = 20
CUSTOMERS = 200
"""Entities in the feature table; each lookup phase asks for entities the other did not."""
POLL_TIMEOUT_S = 90.0
RECORDED = re.compile(r"\bhotserve:[a-z0-9_:]+")
DRIFT_ALERTS = ("HotserveFeatureDrift", "HotservePredictionDrift")
EXPECTED_FIRING = {
    "HotserveFeatureDrift": [{"job": "hotserve", "model": "fraud", "version": "2", "feature": "amount"}],
    "HotservePredictionDrift": [{"job": "hotserve", "model": "fraud", "version": "2", "output": "score"}],
    "HotserveModelLoadFailed": [{"job": "hotserve", "model": "scored"}],
    "HotserveModelSwapFailed": [{"job": "hotserve", "model": "scored"}],
}
"""Alerts whose expression must hold, with the exact label sets; every other alert must be silent."""


@dataclass
class Stack:
    server: ServerProcess
    prometheus_url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        doc = response.json()
        assert doc["status"] == "success", f"{expr}: {doc}"
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result


def poll(check: Callable[[], bool], what: Callable[[], str]) -> None:
    """Re-run `check` (a query of Prometheus' API) until it holds; fail with `what()` after the timeout."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {POLL_TIMEOUT_S:.0f} s: {what()}")
        time.sleep(0.2)


def _send_errors(base_url: str) -> None:
    """A 400, a 404 and a 504 (deadline of 1 us), so the error panels have series. Sent before the
    first scrape: their rates stay 0 and the error-ratio alerts judge the successful traffic."""
    one_row = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 9], "data": [1] * 9}]})
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.post("/v2/models/fraud/infer", content=b"{").status_code == 400
        assert client.post("/v2/models/nope/infer", content=b"{}").status_code == 404
        late = client.post("/v2/models/fraud/infer", content=one_row, headers={"Hotserve-Timeout-Ms": "0.001"})
        assert late.status_code == 504, late.text


def _send_streams(base_url: str, streams: tuple[np.ndarray, np.ndarray], part: slice) -> None:
    """`part` of the training-distribution rows to version 1 (production; v1 records, v2 JSON and
    binary) and of the rows with `amount` tripled to version 2 (v2 JSON and binary)."""
    stable, drifted = streams
    with httpx.Client(base_url=base_url, timeout=30) as client:
        score_stream(client, "fraud", None, stable[part])
        score_stream(client, "fraud", 2, drifted[part])


def _write_scored(repository: Path, customers: Path) -> None:
    """`scored` versions 1-3 (the same weights: a shadow agrees) reading `age` and `count` from the
    `cust` view, version 4 corrupt; production is version 1. `customers`: the view's table."""
    view = FeatureView(
        name="cust",
        entity_key="customer_id",
        features=[StoredFeature(name="age"), StoredFeature(name="count", datatype="INT64")],
    )
    spec = FeatureSpec(
        input="features",
        columns=TAB_COLUMNS,
        request_features=["amount", "hour"],
        store_features=["age", "count"],
        entity_key="customer_id",
        view=view,
    )
    for version in (1, 2, 3):
        write_version(
            repository,
            "scored",
            version,
            tabular_model(seed=1),
            [("features", "FP32", [-1, 4])],
            [("score", "FP32", [-1, 1])],
            BatchingPolicy(max_batch_size=16, max_queue_delay_ms=1.0),
            spec,
        )
    write_corrupt(repository, "scored", version=4)
    control_path = repository / ".hotserve" / "control.json"
    control = json.loads(control_path.read_text())
    control["models"]["scored"] = {"aliases": {"production": 1}}
    control_path.write_text(json.dumps(control))
    customers.write_text("customer_id,age,count\n" + "".join(f"c{i},{20 + i % 50},{i % 7}\n" for i in range(CUSTOMERS)))


def _look_up(base_url: str, entities: range) -> None:
    """v1 requests of four records each, every entity asked twice: the first time the store answers
    (gathered round trips), the second the local cache. Once a shadow is set, each is copied to it."""
    records = [{"customer_id": f"c{i}", "amount": 12.5, "hour": 3.0} for i in entities]
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for _ in range(2):
            for start in range(0, len(records), 4):
                response = client.post("/v1/models/scored:predict", json={"instances": records[start : start + 4]})
                assert response.status_code == 200, response.text


def _admin(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(
        method, f"{base_url}/admin{path}", json=body, timeout=60, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )


def _prime_control_path(base_url: str) -> None:
    """Before the first scrape: lookups, a promotion (v1 drains and unloads), a shadow."""
    _look_up(base_url, range(0, 40))
    promoted = _admin(base_url, "POST", "/models/scored/promote", {"version": 2})
    assert promoted.status_code == 200 and promoted.json()["change"]["changed"], promoted.text
    shadow = _admin(base_url, "PUT", "/models/scored/shadow", {"version": 3})
    assert shadow.status_code == 200, shadow.text
    _look_up(base_url, range(40, 80))


def _exercise_control_path(base_url: str) -> None:
    """After it: fresh lookups, a promotion that fails (corrupt version) and one that succeeds."""
    _look_up(base_url, range(80, 140))
    failed = _admin(base_url, "POST", "/models/scored/promote", {"version": 4})
    assert failed.status_code == 409 and "sha256" in failed.text, failed.text
    back = _admin(base_url, "POST", "/models/scored/promote", {"version": 1})
    assert back.status_code == 200 and back.json()["change"]["from"] == 2, back.text
    _look_up(base_url, range(140, CUSTOMERS))


def _write_graded(repository: Path) -> None:
    """`graded` version 1: score = sigmoid(features @ W + b), a binary prediction contract on
    `score`, and a training AUC (lineage) of 0.51."""
    folder = write_version(
        repository, "graded", 1, tabular_model(seed=7), [("features", "FP32", [-1, 4])], [("score", "FP32", [-1, 1])]
    )
    manifest = ModelManifest.read(folder)
    manifest.model_copy(update={"prediction": PredictionContract(task="binary", output="score")}).write(folder)


def _grade(base_url: str, phase: int) -> list[dict[str, Any]]:
    """GRADED_REQUESTS requests of GRADED_ROWS rows with our own request ids; returns their labels,
    drawn from each row's score (seeded by `phase`)."""
    rng = np.random.default_rng(phase)
    labels = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(GRADED_REQUESTS):
            rid = f"graded-{phase}-{i}"
            features = rng.normal(size=(GRADED_ROWS, 4)).astype(np.float32)
            tensor = {
                "name": "features",
                "shape": [GRADED_ROWS, 4],
                "datatype": "FP32",
                "data": features.ravel().tolist(),
            }
            answer = client.post("/v2/models/graded/infer", json={"inputs": [tensor]}, headers={"x-request-id": rid})
            assert answer.status_code == 200 and answer.headers["x-request-id"] == rid, answer.text
            scores = answer.json()["outputs"][0]["data"]
            labels += [{"request_id": rid, "row": row, "label": int(rng.random() < p)} for row, p in enumerate(scores)]
    return labels


def _post_labels(base_url: str, labels: list[dict[str, Any]]) -> None:
    """Post `labels` (JSON lines) until every one joins a served row: capture's writer indexes the
    rows off the event loop, and posting again is idempotent (a joined row counts as a duplicate)."""
    body = "\n".join(json.dumps(label) for label in labels).encode()
    answers: list[dict[str, Any]] = []

    def all_joined() -> bool:
        answer = httpx.post(
            f"{base_url}/v2/models/graded/labels",
            content=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/x-ndjson"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
        return bool(answers[-1]["unknown"] == 0)

    poll(all_joined, lambda: f"labels still unknown: {answers[-1:]}")
    assert answers[-1]["joined"] + answers[-1]["duplicates"] == len(labels), answers[-1]


@pytest.fixture(scope="module")
def stack(serve_with: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = find_tool("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    repository = write_fraud_repository(root / "repository")
    _write_scored(repository, root / "customers.csv")
    _write_graded(repository)
    server = serve_with(
        repository,
        {
            **SERVER_ENV,
            "HOTSERVE_FEATURE_TABLE": str(root / "customers.csv"),
            "HOTSERVE_CAPTURE_SINK": str(root / "capture"),
        },
    )
    # Every series exists before the first scrape (Prometheus takes a new counter's first sample
    # as its start): the first 300 rows of each stream, one request per protocol, the errors, the
    # control path and feature lookups of `scored`, and `graded`'s first rows and labels.
    streams = (fraud_rows(seed=1, rows=STREAM_ROWS), shifted(fraud_rows(seed=2, rows=STREAM_ROWS), "amount", 3.0))
    _send_streams(server.base_url, streams, slice(0, PRIMING_ROWS))
    _send_errors(server.base_url)
    _prime_control_path(server.base_url)
    _post_labels(server.base_url, _grade(server.base_url, phase=1))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {"job_name": "hotserve", "static_configs": [{"targets": [server.base_url.removeprefix("http://")]}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (root / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (root / "prometheus.log").read_text()
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll(ready, lambda: (root / "prometheus.log").read_text())
        stack = Stack(server, url)
        # Traffic once Prometheus has scraped the idle server: the rates it then sees are real.
        poll(lambda: bool(stack.query('hotserve_requests_total{job="hotserve"}')), lambda: "no first scrape")
        _send_streams(server.base_url, streams, slice(PRIMING_ROWS, None))
        _exercise_control_path(server.base_url)
        _post_labels(server.base_url, _grade(server.base_url, phase=2))
        for version in (1, 2):
            drift_report(server.base_url, "fraud", version, STREAM_ROWS)
        yield stack
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_exposition_passes_promtool_check_metrics(stack: Stack) -> None:
    exposition = httpx.get(f"{stack.server.base_url}/metrics").text
    assert "hotserve_drift_feature_psi{" in exposition
    result = run([find_tool("promtool"), "check", "metrics"], stdin=exposition, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_returns_a_number(stack: Stack, dashboard_path: Path) -> None:
    """A number, not only a series: a quantile or ratio over rates that did not change is NaN, which
    Grafana draws as nothing."""
    pending = dict.fromkeys(panel_exprs(load_dashboard(dashboard_path)))

    def all_answered() -> bool:
        for item in list(pending):
            if any(math.isfinite(float(sample["value"][1])) for sample in stack.query(item[1])):
                del pending[item]
        return not pending

    poll(
        all_answered,
        lambda: "queries without a number: " + "; ".join(f"{t}: {e} -> {stack.query(e)}" for t, e in pending),
    )
    # The traffic arrived between scrapes: rates are measured, not extrapolated from nothing.
    request_rate = next(e for t, e in panel_exprs(load_dashboard(dashboard_path)) if t == "Request rate")
    poll(lambda: float(stack.query(request_rate)[0]["value"][1]) > 0, lambda: str(stack.query(request_rate)))


def test_drift_alerts_hold_for_the_shifted_stream_only_and_every_other_alert_is_silent(stack: Stack) -> None:
    rules = alert_rules()
    assert set(EXPECTED_FIRING) <= {rule["alert"] for rule in rules}
    for rule in rules:
        expr = rule["expr"]
        if rule["alert"] in EXPECTED_FIRING:
            expected = EXPECTED_FIRING[rule["alert"]]
            poll(
                lambda e=expr, x=expected: [r["metric"] for r in stack.query(e)] == x,
                lambda e=expr: f"{rule['alert']}: {stack.query(e)}",
            )
            continue
        # Silent because its condition is false, not because it names series that do not exist.
        names = set(METRIC_NAME.findall(expr)) | set(RECORDED.findall(expr)) | ({"up"} if "up{" in expr else set())
        for name in names:
            poll(lambda n=name: bool(stack.query(f"count({n})")), lambda n=name: f"no series {n}")
        assert stack.query(expr) == [], rule["alert"]


def _pending(stack: Stack) -> dict[str, dict[str, Any]]:
    alerts = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {a["labels"]["alertname"]: a for a in alerts if a["labels"]["alertname"] in DRIFT_ALERTS}


def test_drift_alerts_fire_in_promtool_on_the_series_prometheus_scraped(stack: Stack, tmp_path: Path) -> None:
    # Prometheus itself evaluates the chart's rules: the drift alerts are pending (for: 15m).
    poll(
        lambda: {name: a["state"] for name, a in _pending(stack).items()} == dict.fromkeys(DRIFT_ALERTS, "pending"),
        lambda: str(_pending(stack)),
    )
    pending = _pending(stack)
    scraped = stack.query('{__name__=~"hotserve_drift_(feature_psi|prediction_psi|window_rows)"}')
    input_series = [
        {
            "series": sample["metric"]["__name__"]
            + "{"
            + ",".join(f'{k}="{v}"' for k, v in sorted(sample["metric"].items()) if k != "__name__")
            + "}",
            "values": f"{sample['value'][1]}x30",  # the scraped value, held for half an hour
        }
        for sample in scraped
    ]
    tests = {
        "rule_files": [str(path) for path in RULE_FILES],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    *({"eval_time": "10m", "alertname": name, "exp_alerts": []} for name in DRIFT_ALERTS),
                    *(
                        {
                            "eval_time": "16m",
                            "alertname": name,
                            "exp_alerts": [
                                {
                                    "exp_labels": {k: v for k, v in alert["labels"].items() if k != "alertname"},
                                    "exp_annotations": alert["annotations"],
                                }
                            ],
                        }
                        for name, alert in pending.items()
                    ),
                ],
            }
        ],
    }
    test_file = tmp_path / "drift_alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = run([find_tool("promtool"), "test", "rules", str(test_file)])
    assert "SUCCESS" in result.stdout
