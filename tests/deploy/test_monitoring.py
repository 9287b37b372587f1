"""Alert rules and Grafana dashboards shipped in the chart: valid PromQL, real metric names, alerts fire."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.metrics.instruments import Metrics
from tests.deploy.conftest import CHART, run

RULE_FILES = sorted((CHART / "rules").glob("*.yaml"))
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
RULES_UNIT_TEST = Path(__file__).parent / "promtool" / "hotserve_rules_test.yaml"
# Grafana's built-in interval variables, replaced by durations PromQL accepts.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
METRIC_NAME = re.compile(r"\bhotserve_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _exported_metric_names() -> set[str]:
    """Every series name the server's `Metrics` can expose (counters get `_total`)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(family.name)
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # rows nest their panels


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets") or []
             if t.get("expr")]
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    substituted = []
    for expr in exprs:
        for grafana, duration in GRAFANA_INTERVALS.items():
            expr = expr.replace(grafana, duration)
        for name in variables:  # query variables are regex label matchers ("All" = .*)
            expr = expr.replace(f"${{{name}}}", ".*").replace(f"${name}", ".*")
        assert "$" not in expr, f"unresolved Grafana variable in {expr!r}"
        substituted.append(expr)
    return substituted


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    assert RULE_FILES, f"no rule files in {CHART / 'rules'}"
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert "SUCCESS" in result.stdout


def test_alerts_fire_as_unit_tested(promtool: str) -> None:
    result = run([promtool, "test", "rules", str(RULES_UNIT_TEST)])
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_promql_parses(promtool: str, dashboard_path: Path, tmp_path: Path) -> None:
    exprs = _dashboard_exprs(json.loads(dashboard_path.read_text()))
    assert len(exprs) >= 10
    rules = {"groups": [{"name": "dashboard-exprs", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    rules_file = tmp_path / "dash_exprs.rules.json"
    rules_file.write_text(json.dumps(rules))
    result = run([promtool, "check", "rules", str(rules_file)])
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable_by_the_grafana_sidecar(dashboard_path: Path) -> None:
    dashboard = json.loads(dashboard_path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{panel['title']} overflows the grid"
        for target in panel.get("targets") or []:
            assert target["datasource"]["uid"] == "${datasource}"


def test_rules_and_dashboards_only_use_metrics_the_server_exports() -> None:
    exported = _exported_metric_names()
    used: dict[str, set[str]] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                used.setdefault(path.name, set()).update(METRIC_NAME.findall(rule["expr"]))
    for path in DASHBOARDS:
        used.setdefault(path.name, set()).update(
            METRIC_NAME.findall(" ".join(_dashboard_exprs(json.loads(path.read_text())))))
    unknown = {name: sorted(metrics - exported) for name, metrics in used.items()
               if metrics - exported}
    assert not unknown, f"metrics not defined in server/metrics/instruments.py: {unknown}"
    covered = set().union(*used.values())
    for required in ("hotserve_requests_total", "hotserve_request_duration_seconds_bucket",
                     "hotserve_queue_duration_seconds_bucket",
                     "hotserve_inference_duration_seconds_bucket", "hotserve_batch_size_bucket",
                     "hotserve_queue_depth", "hotserve_model_loads_total", "hotserve_model_ready"):
        assert required in covered, f"{required} is neither drawn nor alerted on"
