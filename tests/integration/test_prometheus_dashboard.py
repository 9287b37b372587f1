"""The chart's dashboard and alerts against a real Prometheus scraping a real `hotserve serve`.

Prometheus (the Debian package's server, on 127.0.0.1) scrapes the server every second and
evaluates the chart's rule file. After its first scrape, traffic from the training distribution
goes to version 1 and a stream with `amount` tripled to version 2. Then every dashboard query
returns data, the drift alerts' expressions hold for exactly the shifted feature and version
(pending in Prometheus), every other alert is silent over metrics that do exist, and
`promtool test rules` fed the series Prometheus scraped fires the drift alerts with the labels
and annotations Prometheus rendered. Nothing waits on a clock: each check polls Prometheus' API
until its data is there.
"""

from __future__ import annotations

import json
import re
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
from tests.deploy.conftest import find_tool, run
from tests.deploy.monitoring_files import DASHBOARDS, METRIC_NAME, RULE_FILES, alert_rules, load_dashboard, panel_exprs

pytestmark = pytest.mark.integration

STREAM_ROWS = 3_000
PRIMING_ROWS = 300
SERVER_ENV = {"HOTSERVE_DRIFT_INTERVAL_S": "0.2", "HOTSERVE_DRIFT_MIN_ROWS": "1000"}
POLL_TIMEOUT_S = 90.0
RECORDED = re.compile(r"\bhotserve:[a-z0-9_:]+")
DRIFT_ALERTS = ("HotserveFeatureDrift", "HotservePredictionDrift")
EXPECTED_FIRING = {
    "HotserveFeatureDrift": [{"job": "hotserve", "model": "fraud", "version": "2", "feature": "amount"}],
    "HotservePredictionDrift": [{"job": "hotserve", "model": "fraud", "version": "2", "output": "score"}],
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


@pytest.fixture(scope="module")
def stack(serve_with: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = find_tool("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    server = serve_with(write_fraud_repository(root / "repository"), SERVER_ENV)
    # Every series exists before the first scrape (Prometheus takes a new counter's first sample
    # as its start): the first 300 rows of each stream, one request per protocol, and the errors.
    streams = (fraud_rows(seed=1, rows=STREAM_ROWS), shifted(fraud_rows(seed=2, rows=STREAM_ROWS), "amount", 3.0))
    _send_streams(server.base_url, streams, slice(0, PRIMING_ROWS))
    _send_errors(server.base_url)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [{"job_name": "hotserve", "static_configs": [
            {"targets": [server.base_url.removeprefix("http://")]}]}],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (root / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [prometheus, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
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
def test_every_dashboard_query_returns_data(stack: Stack, dashboard_path: Path) -> None:
    pending = dict.fromkeys(panel_exprs(load_dashboard(dashboard_path)))

    def all_answered() -> bool:
        for item in list(pending):
            if stack.query(item[1]):
                del pending[item]
        return not pending

    poll(all_answered, lambda: "queries without data: " + "; ".join(f"{t}: {e}" for t, e in pending))
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
            poll(lambda e=expr, x=expected: [r["metric"] for r in stack.query(e)] == x,
                 lambda e=expr: f"{rule['alert']}: {stack.query(e)}")
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
    poll(lambda: {name: a["state"] for name, a in _pending(stack).items()}
         == dict.fromkeys(DRIFT_ALERTS, "pending"), lambda: str(_pending(stack)))
    pending = _pending(stack)
    scraped = stack.query('{__name__=~"hotserve_drift_(feature_psi|prediction_psi|window_rows)"}')
    input_series = [{
        "series": sample["metric"]["__name__"] + "{" + ",".join(
            f'{k}="{v}"' for k, v in sorted(sample["metric"].items()) if k != "__name__") + "}",
        "values": f"{sample['value'][1]}x30",  # the scraped value, held for half an hour
    } for sample in scraped]
    tests = {"rule_files": [str(path) for path in RULE_FILES], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": [
            *({"eval_time": "10m", "alertname": name, "exp_alerts": []} for name in DRIFT_ALERTS),
            *({"eval_time": "16m", "alertname": name, "exp_alerts": [
                {"exp_labels": {k: v for k, v in alert["labels"].items() if k != "alertname"},
                 "exp_annotations": alert["annotations"]}]} for name, alert in pending.items()),
        ],
    }]}
    test_file = tmp_path / "drift_alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = run([find_tool("promtool"), "test", "rules", str(test_file)])
    assert "SUCCESS" in result.stdout
