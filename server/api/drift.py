"""`GET /v2/models/{name}[/versions/{v}]/drift`: a version's drift numbers, read-only (a hotserve extension).

Beside model metadata and, like Triton's statistics extension, unauthenticated: it returns the
latest report the drift monitor computed off the request path (per-feature and prediction PSI,
the live and expected share per bin, the window) together with the training reference, so the
numbers can be checked without Prometheus. It computes nothing itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from server.api.deps import Edge, EdgeDep
from server.api.error_handlers import json_response
from server.api.path_params import ModelName, VersionNumber
from server.contract.provenance import utc_timestamp
from server.monitoring.drift import DriftConfig, plan_drift
from server.monitoring.psi import ACT_THRESHOLD, EPSILON, WATCH_THRESHOLD
from server.monitoring.report import DriftReport, QuantityDrift

router = APIRouter()


@router.get("/v2/models/{name}/drift")
async def model_drift(name: ModelName, edge: EdgeDep) -> Response:
    return _drift(edge, name, None)


@router.get("/v2/models/{name}/versions/{version}/drift")
async def version_drift(name: ModelName, version: VersionNumber, edge: EdgeDep) -> Response:
    return _drift(edge, name, version)


def _drift(edge: Edge, name: str, version: int | None) -> Response:
    served = edge.registry.resolve(name, version)  # 404 unknown, 503 not loaded
    monitor = edge.metrics.drift
    config = monitor.config
    drift = monitor.get(served.name, served.version)
    doc: dict[str, Any] = {"name": served.name, "version": str(served.version), "monitored": drift is not None}
    if drift is None:
        reasons = (
            ["drift monitoring is off (HOTSERVE_DRIFT_ENABLED=false)"]
            if not config.enabled
            else plan_drift(served.manifest).skipped or ["nothing to monitor"]
        )
        doc["reason"] = "; ".join(reasons)
    else:
        doc.update(_report(drift.latest, drift.plan.skipped, config))
    return json_response(doc)


def _report(report: DriftReport, skipped: list[str], config: DriftConfig) -> dict[str, Any]:
    return {
        "computed_at": _time(report),
        "window": {
            "rows": report.window_rows,
            "max_rows": config.window_rows,
            "max_age_s": config.window_s or None,
            "min_rows": config.min_rows,
            "sampled_rows_total": report.sampled_rows_total,
        },
        "method": {
            "metric": "psi",
            "epsilon": EPSILON,
            "recompute_interval_s": config.interval_s,
            "thresholds": {"watch": WATCH_THRESHOLD, "act": ACT_THRESHOLD},
        },
        "features": [_quantity(q) for q in report.features],
        "prediction": None if report.prediction is None else _quantity(report.prediction),
        "not_monitored": skipped,
    }


def _time(report: DriftReport) -> str | None:
    if report.computed_at is None:
        return None
    return utc_timestamp("milliseconds", at=report.computed_at)


def _quantity(quantity: QuantityDrift) -> dict[str, Any]:
    return {
        "name": quantity.name,
        "kind": quantity.kind,
        "psi": quantity.psi,
        "status": quantity.status,
        "values": quantity.values,
        "nan": quantity.nan,
        "live_proportions": quantity.live_proportions,
        "expected_proportions": quantity.expected_proportions,
        "reference": quantity.reference.model_dump(),
    }
