"""The chart's dashboards and alert rules as tests read them: files, panels, PromQL with Grafana's
variables resolved, alert rules. Used by the static checks and by the real-Prometheus test."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import CHART

RULE_FILES = sorted((CHART / "rules").glob("*.yaml"))
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
# Grafana's built-in interval variables, replaced by durations PromQL accepts.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
METRIC_NAME = re.compile(r"\bhotserve_[a-z0-9_]+\b")


def load_dashboard(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, with Grafana's variables resolved as "All" does."""
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    found = []
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr:
                continue
            for grafana, duration in GRAFANA_INTERVALS.items():
                expr = expr.replace(grafana, duration)
            for name in variables:  # query variables are regex label matchers ("All" = .*)
                expr = expr.replace(f"${{{name}}}", ".*").replace(f"${name}", ".*")
            assert "$" not in expr, f"unresolved Grafana variable in {expr!r}"
            found.append((panel["title"], expr))
    return found


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [expr for _, expr in panel_exprs(dashboard)]


def rule_groups(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the chart's rule files."""
    return [rule for path in RULE_FILES for group in rule_groups(path) for rule in group["rules"] if "alert" in rule]
