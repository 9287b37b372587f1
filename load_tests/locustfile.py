"""Locust scenario: a mix of the three ways clients call hotserve, with answers checked.

Not the throughput benchmark (that is `load_tests/benchmark.py` with wrk, which costs the server
far less CPU); this one exercises realistic mixed traffic and validates every response:

    locust -f load_tests/locustfile.py --headless -u 16 -r 16 -t 30s \
        --host http://127.0.0.1:8080 --json-file load_tests/results/locust --only-summary

Environment: HOTSERVE_BENCH_MODEL (default `fraud`).
"""

from __future__ import annotations

import json
import os
import struct
import urllib.request
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment

MODEL = os.environ.get("HOTSERVE_BENCH_MODEL", "fraud")


class _Model:
    """Input signature and feature columns, read once from the server's model metadata."""

    input_name = ""
    datatype = "FP32"
    width = 0
    columns: list[str] = []
    """What a v1 record carries: every column, or, with a feature view, the request features and
    the entity key (`HOTSERVE_BENCH_ENTITY`, a demo customer by default)."""
    entity: dict[str, str] = {}


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # EventHook.add_listener is unannotated
def _read_metadata(environment: Environment, **_kwargs: Any) -> None:
    with urllib.request.urlopen(f"{environment.host}/v2/models/{MODEL}", timeout=10) as r:
        meta = json.load(r)
    spec = meta["inputs"][0]
    _Model.input_name, _Model.datatype = spec["name"], spec["datatype"]
    _Model.width = int(spec["shape"][-1])
    features = meta.get("features") or {}
    _Model.columns = features.get("columns", [])
    if features.get("view"):
        _Model.columns = features["request_features"]
        _Model.entity = {features["entity_key"]: os.environ.get("HOTSERVE_BENCH_ENTITY", "c1")}


def _row() -> list[float]:
    return [0.5] * _Model.width


class PredictionClient(FastHttpUser):
    wait_time = between(0.0, 0.005)

    @task(4)
    def v2_json(self) -> None:
        body = {"id": "locust", "inputs": [{"name": _Model.input_name, "shape": [2, _Model.width],
                                            "datatype": _Model.datatype, "data": _row() * 2}]}
        with self.client.post(f"/v2/models/{MODEL}/infer", json=body, name="v2 json",
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            elif r.json()["outputs"][0]["shape"][0] != 2 or r.json().get("id") != "locust":
                r.failure(f"wrong answer: {r.text[:200]}")

    @task(4)
    def v2_binary(self) -> None:
        raw = struct.pack(f"<{_Model.width}f", *_row())
        header = json.dumps({
            "inputs": [{"name": _Model.input_name, "shape": [1, _Model.width],
                        "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }).encode()
        # locust annotates `data` as str | dict, but sends bytes as they are (its docstring says so).
        with self.client.post(f"/v2/models/{MODEL}/infer", data=header + raw,  # type: ignore[arg-type]
                              name="v2 binary",
                              headers={"Content-Type": "application/octet-stream",
                                       "Inference-Header-Content-Length": str(len(header))},
                              catch_response=True) as r:
            if r.status_code != 200 or "Inference-Header-Content-Length" not in r.headers:
                r.failure(f"{r.status_code}: {r.text[:200]}")

    @task(2)
    def v1_records(self) -> None:
        if not _Model.columns:
            return
        instance = {**dict.fromkeys(_Model.columns, 0.5), **_Model.entity}
        with self.client.post(f"/v1/models/{MODEL}:predict", json={"instances": [instance]},
                              name="v1 predict", catch_response=True) as r:
            if r.status_code != 200 or len(r.json()["predictions"]) != 1:
                r.failure(f"{r.status_code}: {r.text[:200]}")
