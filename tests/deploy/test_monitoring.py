"""Alert rules and Grafana dashboards shipped in the chart: valid PromQL, real metric names, alerts fire."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from server.metrics.instruments import Metrics
from tests.deploy.conftest import CHART, run
from tests.deploy.monitoring_files import (
    DASHBOARDS,
    METRIC_NAME,
    RULE_FILES,
    alert_rules,
    dashboard_exprs,
    load_dashboard,
    panels,
    rule_groups,
)

RULES_UNIT_TESTS = sorted((Path(__file__).parent / "promtool").glob("*_test.yaml"))
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SELECTOR = re.compile(r"\b(hotserve_[a-z0-9_]+)\{([^}]*)\}")


def _exported_families() -> dict[str, set[str]]:
    """Every metric family the server's `Metrics` can expose, with its series names (counters get
    `_total`, histograms `_bucket`, `_sum`, `_count`)."""
    families: dict[str, set[str]] = {}
    for family in Metrics().registry.collect():
        if family.type == "counter":
            families[family.name] = {family.name + "_total"}
        elif family.type == "histogram":
            families[family.name] = {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        else:
            families[family.name] = {family.name}
    return families


def _exported_metric_names() -> set[str]:
    return set().union(*_exported_families().values())


def _label_names() -> dict[str, set[str]]:
    """Label names of each family: prometheus_client keeps them in `_labelnames`, on its metric
    objects (`Metrics` attributes) and on the families a collector builds."""
    metrics = Metrics()
    found: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if hasattr(metric, "_labelnames"):
            found[metric._name] = set(metric._labelnames)
    for family in metrics.registry.collect():
        found.setdefault(family.name, set(getattr(family, "_labelnames", ())))
    return found


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    assert RULE_FILES, f"no rule files in {CHART / 'rules'}"
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert "SUCCESS" in result.stdout


def test_alerts_fire_as_unit_tested(promtool: str) -> None:
    result = run([promtool, "test", "rules", *map(str, RULES_UNIT_TESTS)])
    assert result.stdout.count("SUCCESS") == len(RULES_UNIT_TESTS) >= 2, result.stdout


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    cases = [
        case
        for path in RULES_UNIT_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert not alerts - fires, f"alerts never expected to fire in a promtool test: {sorted(alerts - fires)}"
    assert not alerts - silent, f"alerts never expected to be silent in a promtool test: {sorted(alerts - silent)}"


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_promql_parses(promtool: str, dashboard_path: Path, tmp_path: Path) -> None:
    exprs = dashboard_exprs(load_dashboard(dashboard_path))
    assert len(exprs) >= 10
    rules = {
        "groups": [
            {
                "name": "dashboard-exprs",
                "rules": [{"record": f"dashboard:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)],
            }
        ]
    }
    rules_file = tmp_path / "dash_exprs.rules.json"
    rules_file.write_text(json.dumps(rules))
    result = run([promtool, "check", "rules", str(rules_file)])
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable_by_the_grafana_sidecar(dashboard_path: Path) -> None:
    dashboard = load_dashboard(dashboard_path)
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{panel['title']} overflows the grid"
        for target in panel.get("targets") or []:
            assert target["datasource"]["uid"] == "${datasource}"


def test_rules_and_dashboards_only_use_metrics_the_server_exports() -> None:
    exported = _exported_metric_names()
    used: dict[str, set[str]] = {}
    for path in RULE_FILES:
        for group in rule_groups(path):
            for rule in group["rules"]:
                used.setdefault(path.name, set()).update(METRIC_NAME.findall(rule["expr"]))
    for path in DASHBOARDS:
        used.setdefault(path.name, set()).update(METRIC_NAME.findall(" ".join(dashboard_exprs(load_dashboard(path)))))
    unknown = {name: sorted(metrics - exported) for name, metrics in used.items() if metrics - exported}
    assert not unknown, f"metrics not defined in server/metrics/instruments.py: {unknown}"
    covered = set().union(*used.values())
    for family, series in _exported_families().items():
        assert covered & series, f"{family} is neither drawn nor alerted on"


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_selects_model_and_version(dashboard_path: Path) -> None:
    dashboard = load_dashboard(dashboard_path)
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert {"model", "version"} <= set(variables)
    assert variables.index("model") < variables.index("version")  # versions of the chosen models
    labels = _label_names()
    family_of = {name: family for family, series in _exported_families().items() for name in series}
    for panel in panels(dashboard["panels"]):
        for expr in (t["expr"] for t in panel.get("targets") or []):
            for metric, matchers in SELECTOR.findall(expr):
                wanted = ['namespace=~"$namespace"', 'job=~"$job"'] + [
                    f'{label}=~"${label}"' for label in ("model", "version") if label in labels[family_of[metric]]
                ]
                missing = [m for m in wanted if m not in matchers]
                assert not missing, f"{panel['title']}: {metric} not filtered by {missing}"


def test_drift_panels_draw_the_watch_and_act_thresholds() -> None:
    drawn = {}
    for path in DASHBOARDS:
        for panel in panels(load_dashboard(path)["panels"]):
            exprs = " ".join(t["expr"] for t in panel.get("targets") or [])
            if "_psi" in exprs and panel["type"] == "timeseries":
                defaults = panel["fieldConfig"]["defaults"]
                steps = [step["value"] for step in defaults["thresholds"]["steps"]]
                assert steps == [None, 0.1, 0.2], panel["title"]
                assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", panel["title"]
                drawn[panel["title"]] = steps
    assert {"Feature drift (PSI)", "Prediction drift (PSI)"} <= drawn.keys()


def test_drift_alerts_need_psi_over_0_2_on_enough_rows_for_a_sustained_period() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, label in (("HotserveFeatureDrift", "feature"), ("HotservePredictionDrift", "output")):
        rule = rules[name]
        assert "> 0.2" in rule["expr"] and "hotserve_drift_window_rows >= 1000" in rule["expr"]
        assert f"ignoring ({label})" in rule["expr"]
        assert rule["for"] == "15m"
