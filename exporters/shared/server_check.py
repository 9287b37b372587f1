"""The last check of both pipelines: the staged version opens with the server's own loader and
passes its warm-up, so what is published loads.

The loader's checks (model.json against the graph, sha256, custom-op libraries, declared
tensors) and the warm-up's zeros and empty strings run here on CPU, before the version
appears in the repository; a graph that would fail them is refused at export, not at load.
"""

from __future__ import annotations

from pathlib import Path

from exporters.errors import ExportError
from server.contract.manifest import ModelManifest
from server.errors import ModelLoadFailed
from server.registry.loader import open_version, warm_up_inputs, warm_up_rows
from server.settings import Settings


def check_server_loads(folder: Path, manifest: ModelManifest) -> None:
    """ExportError unless the server's loader opens `folder` and every warm-up batch runs."""
    settings = Settings(execution_providers="CPUExecutionProvider")
    try:
        _, runtime = open_version(folder, manifest.name, manifest.version, settings)
    except ModelLoadFailed as exc:
        raise ExportError(f"the server would not load this version: {exc.message}") from exc
    try:
        for rows in warm_up_rows(manifest):
            runtime.run(warm_up_inputs(manifest, rows))
    except Exception as exc:  # InferenceFailed, or anything the runtime lets through
        raise ExportError(f"the server's warm-up (zeros, empty strings) fails on this graph: {exc}") from exc
    finally:
        runtime.close()
