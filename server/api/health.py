"""Server and model health/metadata routes (v2): liveness, readiness, model metadata.

Readiness is false until every model has a ready serving version, and false again
as soon as graceful shutdown starts, so load balancers stop sending traffic.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Request, Response

import server
from server.api.deps import Edge, EdgeDep, ServedModel, state_name
from server.api.error_handlers import json_response
from server.api.path_params import ModelName, VersionNumber
from server.api.request_log import note_expected
from server.contract.manifest import ModelManifest
from server.errors import ModelNotReady, ShuttingDown

router = APIRouter()

EXTENSIONS = ["binary_tensor_data", "parameters"]
"""v2 extensions this server speaks (advertised at `GET /v2`)."""


@router.get("/v2")
async def server_metadata() -> Response:
    return json_response({"name": "hotserve", "version": server.__version__, "extensions": EXTENSIONS})


@router.get("/v2/health/live")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/v2/health/ready")
async def ready(edge: EdgeDep, request: Request) -> Response:
    if edge.inflight.draining:
        note_expected(request.scope)  # what SIGTERM asked for, not a failure to log at ERROR
        return json_response({"ready": False}, 503)
    is_ready = edge.registry.ready
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@router.get("/v2/models/{name}")
async def model_metadata(name: ModelName, edge: EdgeDep) -> Response:
    served = edge.registry.resolve(name)
    return json_response(_metadata(served, edge, name))


@router.get("/v2/models/{name}/versions/{version}")
async def version_metadata(name: ModelName, version: VersionNumber, edge: EdgeDep) -> Response:
    served = edge.registry.resolve(name, version)
    return json_response(_metadata(served, edge, name))


@router.get("/v2/models/{name}/ready")
async def model_ready(name: ModelName, edge: EdgeDep, request: Request) -> Response:
    return _readiness(edge, request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def version_ready(name: ModelName, version: VersionNumber, edge: EdgeDep, request: Request) -> Response:
    return _readiness(edge, request, name, version)


def _readiness(edge: Edge, request: Request, name: str, version: int | None) -> Response:
    """200 `{"ready": true}` or 503 `{"ready": false}`; unknown model/version -> 404."""
    try:
        served = edge.registry.resolve(name, version)
    except ShuttingDown:
        note_expected(request.scope)
        return json_response({"name": name, "ready": False}, 503)
    except ModelNotReady:
        return json_response({"name": name, "ready": False}, 503)
    if edge.inflight.draining:
        note_expected(request.scope)
        return json_response({"name": name, "ready": False}, 503)
    return json_response({"name": served.name, "version": str(served.version), "ready": True})


def _metadata(served: ServedModel, edge: Edge, name: str) -> dict[str, Any]:
    statuses = [s for s in edge.registry.statuses() if s.name == name]
    manifest: ModelManifest = served.manifest
    lineage = manifest.lineage
    return {
        "name": served.name,
        "versions": [str(s.version) for s in statuses if state_name(s.state) == "READY"],
        "platform": manifest.platform,
        "inputs": [spec.model_dump() for spec in manifest.inputs],
        "outputs": [spec.model_dump() for spec in manifest.outputs],
        # hotserve extras beside the v2 fields (clients ignore fields they do not know)
        "version": str(served.version),
        "execution_provider": served.provider,
        "batching": manifest.batching.model_dump(),
        "features": manifest.features.model_dump() if manifest.features else None,
        "lineage": {
            "architecture": lineage.architecture,
            "git_commit": lineage.git_commit,
            "git_dirty": lineage.git_dirty,
            # the file name only: the training machine's folders are not the client's business
            "dataset_path": None if lineage.dataset_path is None else PurePath(lineage.dataset_path).name,
            "dataset_sha256": lineage.dataset_sha256,
            "metrics": lineage.metrics,
            "parent_version": lineage.parent_version,
            # trained with MLflow tracking: the run (tracking URI without credentials, run id)
            "mlflow_run": lineage.mlflow_run.model_dump() if lineage.mlflow_run is not None else None,
            # imported versions: the source file, its producer, edits and --meta pairs
            "imported_from": (manifest.imported_from.model_dump() if manifest.imported_from is not None else None),
        },
        # what the answer means: task, prediction output, decision threshold or agreement tolerance
        "prediction": _prediction(manifest),
        "onnx_sha256": manifest.onnx_sha256,
        "version_states": [
            {"version": str(s.version), "state": state_name(s.state), "reason": s.reason} for s in statuses
        ],
    }


def _prediction(manifest: ModelManifest) -> dict[str, Any] | None:
    """The prediction contract with its output resolved; None for manifests that record no task."""
    contract = manifest.prediction
    if contract is None:
        return None
    return {**contract.model_dump(), "output": manifest.prediction_output}
