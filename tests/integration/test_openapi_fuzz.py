"""No input gets a 5xx: schemathesis over the server's own `/openapi.json`, every route, admin included.

A real `hotserve serve` (admin token on, two small ONNX models) is fuzzed by schemathesis's CLI,
derandomized (the same cases every run) and bounded per operation, so the run takes seconds.
Two runs:
- the document as served: random model names and versions in every path (and a list of hostile
  ones as examples), bodies from the documented schemas; this is how
  `GET /v2/models/x/versions/%C2%B9` (a digit to `str.isdigit`, not to `int`) was found
  answering 500;
- the same document with the names and versions of the read-only and inference routes pinned to
  the served models (the fuzzer's own values are then the negative cases), so inference bodies
  reach decoding, batching and the runtime of a real model. Admin routes keep random names: they
  answer 404 and change nothing, so every case meets the same server state.
Checks: no 5xx (`not_a_server_error`), every status documented, the documented content type, and
bodies valid against the documented response schemas.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from load_tests.server_process import ServerProcess
from onnx_models import write_multi, write_tabular

pytestmark = pytest.mark.integration

TOKEN = "fuzz-admin-token-0123456789abcdef"
MAX_EXAMPLES = 10
"""Cases per operation in the fuzzing phase (the coverage phase adds its boundary cases)."""
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
RUN_TIMEOUT_S = 600
"""A guard against a hung run only."""
CONFIG = """
# Values are drawn from the document only, never from earlier answers: an admin route would
# otherwise get the served models' names from `GET /admin/models` and unload them mid-run.
[phases.examples.extra-data-sources]
responses = false
[phases.coverage.extra-data-sources]
responses = false
[phases.fuzzing.extra-data-sources]
responses = false
"""

MULTI_BODY = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]},
        {"name": "b", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]},
        {"name": "h", "datatype": "FP16", "shape": [1, 2], "data": [0.5, 1.5]},
        {"name": "c", "datatype": "BYTES", "shape": [1], "data": ["x"]},
    ]
}
TAB_BODY = {"instances": [{"amount": 12.5, "age": 40.0, "hour": 13.0, "count": 2.0}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_with: Callable[..., ServerProcess]) -> ServerProcess:
    root = tmp_path_factory.mktemp("fuzz_repository")
    write_tabular(root, 1)
    write_multi(root)
    return serve_with(
        root,
        {
            "HOTSERVE_ADMIN_TOKEN": TOKEN,
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
            "HOTSERVE_MAX_REQUEST_BYTES": "65536",
        },
    )


@pytest.fixture(scope="module")
def document(server: ServerProcess) -> dict[str, Any]:
    served: dict[str, Any] = httpx.get(server.base_url + "/openapi.json", timeout=30).json()
    return served


def fuzz(server: ServerProcess, document: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    """One schemathesis run of `document` against `server`; its report in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = folder / "openapi.json"
    schema.write_text(json.dumps(document))
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config),
        "run",
        str(schema),
        "--url",
        server.base_url,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(folder),
    ]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)


HOSTILE_PATH_VALUES = {
    # digits to `str.isdigit` that `int` refuses or reads as another number, past int64, not digits
    "version": ["\u00b9", "\u0663", "\uff11", "9" * 19, "0", "-1", "1.5", " 1"],
    # names no model can have: a space, non-ASCII, dots, a NUL, a very long one
    "name": ["a b", "caf\u00e9", "..", "\u0000", "m" * 300],
}
"""Path values the examples phase sends to every route as written in the document: random strings
rarely hit a class of bad input (a run without these missed the "\u00b9" version, which was a 500)."""


def with_hostile_examples(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with HOSTILE_PATH_VALUES as the examples of every `{name}` and `{version}`."""
    hostile = copy.deepcopy(document)
    for item in hostile["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", ()):
                values = HOSTILE_PATH_VALUES.get(parameter["name"]) if parameter["in"] == "path" else None
                if values is not None:
                    parameter["examples"] = {f"hostile{i}": {"value": v} for i, v in enumerate(values)}
    return hostile


def pinned(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The operations whose names and versions the second run pins: read-only and inference."""
    for path, item in document["paths"].items():
        if path.startswith(("/admin", "/v2/repository")):
            continue
        for method, operation in item.items():
            if method == "get" or "inference" in operation.get("tags", ()):
                yield operation


def with_served_names(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the served models' names and versions as the only valid path values, and
    a valid body as the example of each inference route."""
    pinned_document = copy.deepcopy(document)
    for operation in pinned(pinned_document):
        for parameter in operation.get("parameters", ()):
            if parameter["in"] == "path" and parameter["name"] in ("name", "version"):
                values = ["multi", "tab"] if parameter["name"] == "name" else ["1"]
                parameter["schema"] = {"type": "string", "enum": values}
                parameter["example"] = values[0]
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and "inference" in operation.get("tags", ()):
            body["example"] = TAB_BODY if "instances" in body["schema"].get("properties", {}) else MULTI_BODY
    return pinned_document


def test_the_document_covers_every_route_and_the_fast_lane(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for route in (
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v1/models/{name}:predict",
        "/v1/models/{name}/versions/{version}:predict",
        "/admin/models/{name}/versions/{version}/unload",
        "/v2/repository/index",
    ):
        assert route in paths, route
    every_answer = [code for item in paths.values() for op in item.values() for code in op["responses"]]
    assert "422" not in every_answer  # the server answers a malformed request 400, never 422


@pytest.mark.parametrize("run", ["as_served", "served_names"])
def test_no_input_gets_a_server_error(
    run: str, server: ServerProcess, document: dict[str, Any], tmp_path: Path
) -> None:
    fuzzed = with_hostile_examples(document) if run == "as_served" else with_served_names(document)
    done = fuzz(server, fuzzed, tmp_path / run)
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]
    assert " passed" in done.stdout and "API Operations" in done.stdout, done.stdout[-5_000:]
    assert "Internal Server Error" not in server.log() and "unhandled error" not in server.log()
