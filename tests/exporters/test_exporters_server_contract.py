"""What the exporter publishes is what the server loads: manifest, sha256 and graph checks pass."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.export.pipeline import ExportResult
from server.registry.loader import open_version, warm_up_inputs
from server.registry.repository import scan_repository
from server.settings import Settings


def _serve_rows(result: ExportResult) -> None:
    manifest, runtime = open_version(result.version_dir, result.manifest.name, result.manifest.version, Settings())
    try:
        for rows in (1, manifest.batching.max_batch_size):
            outputs = runtime.run(warm_up_inputs(manifest, rows))
            assert outputs["probability"].shape == (rows,)
            assert np.all((outputs["probability"] >= 0) & (outputs["probability"] <= 1))
    finally:
        runtime.close()


@pytest.mark.parametrize("exported", ["exported_mlp", "exported_transformer", "exported_mlp_int8"])
def test_server_loads_and_runs_the_published_version(exported: str, request: pytest.FixtureRequest) -> None:
    result: ExportResult = request.getfixturevalue(exported)
    assert scan_repository(result.version_dir.parent.parent) == {result.manifest.name: [1]}
    _serve_rows(result)
