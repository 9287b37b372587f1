"""The load scenarios for the `locust` command line and web UI, against a server you started:

    locust -f load_tests/locustfile.py --host http://127.0.0.1:8080            # web UI on :8089
    locust -f load_tests/locustfile.py --headless -u 16 -r 16 -t 30s --host http://127.0.0.1:8080

The same users as `python -m load_tests run` (which starts the server, adds the plots, the
summary and the SLO gate): v2 JSON, v2 binary and v1 records with the feature-store join, every
answer checked. With HOTSERVE_ADMIN_TOKEN set, the operator user joins and releases a version
through the admin API during the run; a run that ends mid-cycle leaves the model as the cycle
left it (`python -m load_tests run` puts it back). Environment: HOTSERVE_BENCH_MODEL (default `fraud`),
HOTSERVE_BENCH_ENTITIES (the table the server's store was filled from; default `demo:fraud`),
HOTSERVE_BENCH_UNKNOWN_SHARE (default 0.05).
"""

from __future__ import annotations

import os
from typing import Any

from locust import between, events
from locust.env import Environment

from load_tests.operator import OperatorPlan, OperatorUser
from load_tests.recorder import Recorder
from load_tests.scenarios import PredictionUser, V1FeatureUser, V2BinaryUser, V2JsonUser
from load_tests.target import read_target

MODEL = os.environ.get("HOTSERVE_BENCH_MODEL", "fraud")
TOKEN = os.environ.get("HOTSERVE_ADMIN_TOKEN", "")


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # EventHook.add_listener is unannotated
def _read_target(environment: Environment, **_kwargs: Any) -> None:
    PredictionUser.target = read_target(
        environment.host or "",
        MODEL,
        entities=os.environ.get("HOTSERVE_BENCH_ENTITIES", "demo:fraud"),
        unknown_share=float(os.environ.get("HOTSERVE_BENCH_UNKNOWN_SHARE", "0.05")),
    )


class V2Json(V2JsonUser):
    abstract = False
    weight = 4
    wait_time = between(0.0, 0.01)


class V2Binary(V2BinaryUser):
    abstract = False
    weight = 3
    wait_time = between(0.0, 0.01)


class V1Features(V1FeatureUser):
    abstract = False
    weight = 3
    wait_time = between(0.0, 0.01)


class Operator(OperatorUser):
    abstract = not TOKEN
    plan = OperatorPlan(model=MODEL, token=TOKEN)
    recorder = Recorder()
