"""`hotserve release` end to end: two real `hotserve serve` replicas sharing a real Redis of the
test's own, real onnxruntime on a fraud scorer the test writes, traffic from a client thread,
and the CLI following the release to its verdict with a fast schedule (seconds).

Version 1 serves production; version 2 is the scorer retrained (a good candidate); version 3 is
miscalibrated (its bias moved), so its scores shift and some decisions at the threshold flip.
Every release runs at the default gates (only the schedule is shortened): every gate is judged
on confidence sequences, so this machine's latency noise is no reason to loosen a bound.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from onnx import TensorProto, helper, numpy_helper

from fraud_scorer import CATEGORICAL, COLUMNS, REFERENCE_ROWS, fraud_rows, scorer_model
from load_tests.server_process import REPO_ROOT, ServerProcess, start_server
from onnx_models import write_version
from redis_process import RedisProcess, start_redis
from server.contract.manifest import ONNX_FILENAME, BatchingPolicy, FeatureSpec
from training.reference_stats import drift_reference, prediction_histogram

pytestmark = pytest.mark.integration

TOKEN = "release-token-0123456789"
REPLICAS = ("replica-a", "replica-b")
THRESHOLD = 0.3
VERDICT_TIMEOUT_S = 180.0
"""A hang guard for the CLI; the schedule itself takes seconds."""


def write_scorer(
    repository: Path, version: int, bias: float, fault: str | None = None, retrained: int | None = None
) -> None:
    """The fraud scorer with `bias`, binned on the reference scores of the bias -3 scorer
    (production's); `fault` makes it a bad candidate (`with_fault`); `retrained` (a seed) moves
    each weight by 2% at random, as a retraining on the same data with another seed would: its
    scores differ by up to ~0.02 and about 0.1% of its decisions at the threshold."""
    reference = fraud_rows(seed=0, rows=REFERENCE_ROWS)
    production = scorer_model(reference.mean(axis=0), reference.std(axis=0))
    session = ort.InferenceSession(production.SerializeToString(), providers=["CPUExecutionProvider"])
    drift = drift_reference(
        reference,
        COLUMNS,
        (prediction_histogram(session.run(None, {"features": reference})[0]), "score"),
        categorical=CATEGORICAL,
    )
    model = scorer_model(reference.mean(axis=0), reference.std(axis=0))
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == "b":
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.array([bias], np.float32), "b"))
        if tensor.name == "W" and retrained is not None:
            weights = numpy_helper.to_array(tensor)
            moved = weights * (1 + np.random.default_rng(retrained).normal(0, 0.02, weights.shape))
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(moved.astype(np.float32), "W"))
    if fault is not None:
        model = with_fault(model, fault, reference)
    onnx.checker.check_model(model)
    write_version(
        repository,
        "fraud",
        version,
        model,
        [("features", "FP32", [-1, len(COLUMNS)])],
        [("score", "FP32", [-1, 1])],
        BatchingPolicy(max_batch_size=64, max_queue_delay_ms=1.0),
        FeatureSpec(input="features", columns=COLUMNS, request_features=COLUMNS),
        drift,
    )


def write_corrupt_scorer(repository: Path, version: int) -> None:
    """Production's scorer (its contract: a release starts) whose model.onnx no longer matches the
    sha256 in its model.json, so it fails to load."""
    write_scorer(repository, version, -3.0)
    (repository / "fraud" / str(version) / ONNX_FILENAME).write_bytes(b"this is not an onnx model")


BAD_CANDIDATES = {6: "errors", 7: "slow", 8: "flips"}
"""Versions the fleet's repository holds beside 1-4: production's scorer with one fault each."""
SLOW_MATMULS = 40
"""[n, 1024] x [1024, 1024] products the slow candidate adds per batch: about 3 ms on this machine's
cores, where production answers in about 1 ms."""


def with_fault(model: onnx.ModelProto, fault: str, reference: np.ndarray) -> onnx.ModelProto:
    """The scorer with one fault between its logit `z` and `Sigmoid`, computed from the first
    scaled feature `f0`:
    - `errors`: rows with `f0` above its 90th percentile make a Gather index out of range, so
      onnxruntime fails the whole batch (500s on a share of inputs);
    - `flips`: rows below its 3.5th percentile (low scores) get +10 on the logit: their decision at
      the threshold flips (about 3% of requests);
    - `slow`: SLOW_MATMULS matrix products whose sum, times zero, is added (same answers, slower)."""
    scaled = (reference[:, 0] - reference[:, 0].mean()) / reference[:, 0].std()
    graph = model.graph
    (sigmoid,) = [n for n in graph.node if n.op_type == "Sigmoid"]
    sigmoid.input[0] = "z_fault"
    constants: dict[str, np.ndarray] = {
        "f0_start": np.array([0]), "f0_end": np.array([1]), "f0_axis": np.array([1]),
    }  # fmt: skip
    nodes = [helper.make_node("Slice", ["scaled", "f0_start", "f0_end", "f0_axis"], ["f0"])]
    if fault == "errors":
        constants |= {
            "cut": np.array([np.quantile(scaled, 0.90)], np.float32),
            "far": np.array([1000]),
            "zero": np.zeros(1, np.float32),
        }
        nodes += [
            helper.make_node("Greater", ["f0", "cut"], ["hit"]),
            helper.make_node("Cast", ["hit"], ["hit_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["hit_i", "far"], ["index"]),
            helper.make_node("Gather", ["zero", "index"], ["nothing"]),  # index 1000 of 1: out of range
            helper.make_node("Add", ["z", "nothing"], ["z_fault"]),
        ]
    elif fault == "flips":
        constants |= {"cut": np.array([np.quantile(scaled, 0.035)], np.float32), "push": np.array([10.0], np.float32)}
        nodes += [
            helper.make_node("Less", ["f0", "cut"], ["hit"]),
            helper.make_node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["hit_f", "push"], ["bump"]),
            helper.make_node("Add", ["z", "bump"], ["z_fault"]),
        ]
    elif fault == "slow":
        constants |= {
            "spread": np.full((len(COLUMNS), 1024), 1 / len(COLUMNS), np.float32),
            "halve": (np.eye(1024) * 0.5).astype(np.float32),
            "sum_axis": np.array([1]),
            "zero": np.zeros(1, np.float32),
        }
        nodes.append(helper.make_node("MatMul", ["scaled", "spread"], ["h0"]))
        nodes += [helper.make_node("MatMul", [f"h{i}", "halve"], [f"h{i + 1}"]) for i in range(SLOW_MATMULS)]
        nodes += [
            helper.make_node("ReduceSum", [f"h{SLOW_MATMULS}", "sum_axis"], ["total"], keepdims=1),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["z", "nothing"], ["z_fault"]),
        ]
    else:
        raise ValueError(f"unknown fault {fault!r}")
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    position = list(graph.node).index(sigmoid)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    return model


@dataclass
class Fleet:
    redis: RedisProcess
    replicas: list[ServerProcess]
    folder: Path
    failures: list[str] = field(default_factory=list)
    answered: int = 0
    down: set[int] = field(default_factory=set)
    """Replicas the test killed: the client stops sending to them."""

    def admin(self, method: str, path: str, body: Any = None, replica: int = 0) -> Any:
        response = httpx.request(
            method,
            self.replicas[replica].base_url + path,
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert response.status_code < 300, response.text
        return response.json()

    def cli(self, *args: str) -> tuple[int, str]:
        """`hotserve release ARGS` against replica 0: exit code and output."""
        env = {**os.environ, "HOTSERVE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", "release", *args, "--url", self.replicas[0].base_url],
            env=env,
            capture_output=True,
            text=True,
            timeout=VERDICT_TIMEOUT_S,
        )
        return done.returncode, done.stdout + done.stderr

    def release(self, version: int, policy: dict[str, Any]) -> tuple[int, str, float]:
        """`hotserve release fraud VERSION --policy FILE --wait`: exit code, output, seconds to verdict."""
        policy_file = self.folder / f"policy-{version}.yaml"
        policy_file.write_text(json.dumps(policy))  # JSON is YAML
        env = {**os.environ, "HOTSERVE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", "release", "fraud", str(version), "--policy", str(policy_file)]
            + ["--wait", "--poll-s", "0.2", "--url", self.replicas[1].base_url],
            env=env,
            capture_output=True,
            text=True,
            timeout=VERDICT_TIMEOUT_S,
        )
        return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@contextmanager
def started_fleet(folder: Path) -> Iterator[Fleet]:
    """Redis and two replicas, each with its own copy of the repository (as on two nodes)."""
    repository = folder / "repository"
    write_scorer(repository, 1, -3.0)
    write_scorer(repository, 2, -3.0, retrained=1)
    write_scorer(repository, 3, -1.5)
    write_corrupt_scorer(repository, 4)
    for version, fault in BAD_CANDIDATES.items():
        write_scorer(repository, version, -3.0, fault)
    redis_server = start_redis()
    replicas: list[ServerProcess] = []
    try:
        for name in REPLICAS:
            shutil.copytree(repository, folder / name / "repository")
            replicas.append(
                start_server(
                    folder / name / "repository",
                    folder / name / "server.log",
                    env={
                        "HOTSERVE_REDIS_URL": redis_server.url(),
                        "HOTSERVE_ADMIN_TOKENS": f"ci:{TOKEN}",
                        "HOTSERVE_AUDIT_LOG_PATH": str(folder / name / "audit.jsonl"),
                        "HOTSERVE_REPLICA_ID": name,
                        "HOTSERVE_EVIDENCE_BUCKET_S": "0.5",
                        "HOTSERVE_RELEASE_TICK_S": "0.25",
                        "HOTSERVE_CONTROL_RECONCILE_INTERVAL_S": "1",
                        "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
                        "HOTSERVE_INTRA_OP_THREADS": "1",
                    },
                )
            )
        fleet = Fleet(redis_server, replicas, folder)
        fleet.admin("POST", "/admin/models/fraud/promote", {"version": 1})
        yield fleet
    finally:
        for replica in replicas:
            replica.stop()
        redis_server.stop()


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with started_fleet(tmp_path_factory.mktemp("release-fleet")) as fleet:
        yield fleet


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """The module's fleet, back to production v1 with no split or shadow on both replicas (each
    release ends before its test does), and a client record of its own."""
    shared_fleet.admin("PUT", "/admin/models/fraud/aliases/production", {"version": 1})
    shared_fleet.admin("DELETE", "/admin/models/fraud/traffic")
    shared_fleet.admin("DELETE", "/admin/models/fraud/shadow")
    deadline = time.monotonic() + VERDICT_TIMEOUT_S
    for replica in range(len(REPLICAS)):  # both applied it: a release reads production where it starts
        while True:
            model = shared_fleet.admin("GET", "/admin/models/fraud", replica=replica)
            if model["aliases"]["production"] == 1 and not model["traffic"] and model["shadow"] is None:
                break
            assert time.monotonic() < deadline, model
            time.sleep(0.05)
    return Fleet(shared_fleet.redis, shared_fleet.replicas, shared_fleet.folder)


@pytest.fixture
def own_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet for one test: one that kills a replica, or needs a model with no release yet."""
    with started_fleet(tmp_path) as fleet:
        yield fleet


def send_traffic(fleet: Fleet) -> Iterator[Fleet]:
    """Single-row requests to both replicas in turn until the test ends; failures recorded."""
    rows = fraud_rows(seed=7, rows=2000)
    stop = threading.Event()

    def send(offset: int) -> None:
        with httpx.Client(timeout=30) as client:
            index = offset  # each thread its own rows: no request is a duplicate of another's
            while not stop.is_set():
                row = rows[index % len(rows)]
                target = index % len(fleet.replicas)
                index += 1
                if target in fleet.down:
                    continue
                body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 9], "data": row.tolist()}]}
                url = f"{fleet.replicas[target].base_url}/v2/models/fraud/infer"
                try:
                    response = client.post(url, content=orjson.dumps(body))
                except httpx.TransportError as error:
                    if target not in fleet.down:  # not the replica killed while this request was in flight
                        fleet.failures.append(f"{type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    fleet.failures.append(f"{response.status_code}: {response.text[:200]}")
                fleet.answered += 1

    threads = [threading.Thread(target=send, args=(offset,), daemon=True) for offset in (0, len(rows) // 2)]
    for thread in threads:
        thread.start()
    yield fleet
    stop.set()
    for thread in threads:
        thread.join(timeout=30)


@pytest.fixture
def traffic(fleet: Fleet) -> Iterator[Fleet]:
    yield from send_traffic(fleet)


@pytest.fixture
def own_traffic(own_fleet: Fleet) -> Iterator[Fleet]:
    yield from send_traffic(own_fleet)


def fast_policy(deadline_s: float = 90.0) -> dict[str, Any]:
    return {
        "shadow_share": 1.0,
        "shadow_bake_s": 1.0,
        "canary_weights": [25, 50],
        "canary_bake_s": 1.0,
        "deadline_s": deadline_s,
        "on_inconclusive": "rollback",
        "gates": {"threshold": THRESHOLD},
    }


def release_entries(fleet: Fleet, release: str) -> list[dict[str, Any]]:
    """Release `release`'s audit entries of every replica (each keeps its own audit log)."""
    out = []
    for name in REPLICAS:
        for line in (fleet.folder / name / "audit.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if entry["action"] == "release" and json.loads(entry["detail"])["release"] == release:
                out.append(json.loads(entry["detail"]))
    return out


def test_a_good_candidate_is_promoted(traffic: Fleet) -> None:
    code, output, seconds = traffic.release(2, fast_policy())
    print(f"good candidate: exit {code} after {seconds:.1f} s\n{output}")
    assert code == 0, output
    model = traffic.admin("GET", "/admin/models/fraud", replica=1)
    assert model["aliases"]["production"] == 2 and model["traffic"] == {} and model["shadow"] is None
    status = traffic.admin("GET", "/admin/models/fraud/releases/current")
    assert status["state"] == "promoted" and status["phase"] == "Successful"
    assert [r["step"]["kind"] for r in status["history"]] == ["shadow", "canary", "canary"]
    for result in status["history"]:
        assert result["decision"]["verdict"] == "pass"
    verdicts = [e for e in release_entries(traffic, status["id"]) if e["event"] == "verdict"]
    assert [v["state"] for v in verdicts] == ["promoted"]
    assert traffic.failures == []


def test_a_miscalibrated_candidate_is_rolled_back_and_production_is_unchanged(traffic: Fleet) -> None:
    code, output, seconds = traffic.release(3, fast_policy())
    print(f"miscalibrated candidate: exit {code} after {seconds:.1f} s\n{output}")
    assert code == 1, output
    for replica in (0, 1):
        model = traffic.admin("GET", "/admin/models/fraud", replica=replica)
        assert model["aliases"]["production"] == 1 and model["traffic"] == {} and model["shadow"] is None
    status = traffic.admin("GET", "/admin/models/fraud/releases/current")
    assert status["state"] == "rolled_back" and status["phase"] == "Failed"
    failed = {g["gate"] for g in status["last_decision"]["gates"] if g["verdict"] == "fail"}
    assert failed & {"agreement", "psi"}, status["last_decision"]
    assert traffic.failures == []


def test_bad_candidates_are_each_rolled_back_by_the_gate_that_sees_their_fault(traffic: Fleet) -> None:
    """5xx on a share of inputs (caught by the shadow's copies before any client sees one), several
    times slower (the canary's p99 ratio), about 3% flipped decisions (agreement), one after the
    other on the same fleet under the same traffic."""
    policy = {**fast_policy(), "canary_weights": [50]}
    expected = {"errors": "error_rate", "slow": "p99_ratio", "flips": "agreement"}
    for version, fault in BAD_CANDIDATES.items():
        code, output, seconds = traffic.release(version, policy)
        print(f"candidate with {fault}: exit {code} after {seconds:.1f} s\n{output}")
        assert code == 1, output
        status = traffic.admin("GET", "/admin/models/fraud/releases/current")
        assert status["state"] == "rolled_back" and status["version"] == version, status
        failed = {g["gate"]: g for g in status["last_decision"]["gates"] if g["verdict"] == "fail"}
        assert expected[fault] in failed, status["last_decision"]
        for replica in (0, 1):
            model = traffic.admin("GET", "/admin/models/fraud", replica=replica)
            assert model["aliases"]["production"] == 1 and model["traffic"] == {} and model["shadow"] is None
    assert traffic.failures == []


def test_too_little_traffic_is_inconclusive_and_rolls_back(fleet: Fleet) -> None:
    code, output, seconds = fleet.release(2, fast_policy(deadline_s=3.0))
    print(f"no traffic: exit {code} after {seconds:.1f} s\n{output}")
    assert code == 2, output
    model = fleet.admin("GET", "/admin/models/fraud")
    assert model["aliases"]["production"] == 1 and model["traffic"] == {} and model["shadow"] is None
    status = fleet.admin("GET", "/admin/models/fraud/releases/current")
    assert status["state"] == "inconclusive" and "too little evidence" in status["detail"]
    verdicts = {g["gate"]: g["verdict"] for g in status["last_decision"]["gates"]}
    assert verdicts.pop("load") == "pass"
    # No labels came: the label gate is reported as not judged (it never holds a release by default).
    assert verdicts.pop("label_loss") == "not_judged" and set(verdicts.values()) == {"inconclusive"}


def test_a_candidate_that_fails_to_load_is_rolled_back(traffic: Fleet) -> None:
    code, output, seconds = traffic.release(4, fast_policy())
    print(f"candidate failing to load: exit {code} after {seconds:.1f} s\n{output}")
    assert code == 1, output
    status = traffic.admin("GET", "/admin/models/fraud/releases/current")
    assert status["state"] == "rolled_back" and "could not start" in status["detail"]
    model = traffic.admin("GET", "/admin/models/fraud")
    assert model["aliases"]["production"] == 1 and model["traffic"] == {} and model["shadow"] is None
    assert traffic.failures == []


def test_a_candidate_that_fails_to_load_on_one_replica_only_is_rolled_back(traffic: Fleet) -> None:
    """Version 5 loads on replica-a and not on replica-b (its copy is corrupt). Whichever replica
    drives, the release stops: it cannot start there, or replica-b's report fails the load gate."""
    write_scorer(traffic.folder / REPLICAS[0] / "repository", 5, -3.0)
    write_corrupt_scorer(traffic.folder / REPLICAS[1] / "repository", 5)
    for replica in range(len(REPLICAS)):
        traffic.admin("POST", "/admin/repository/rescan", replica=replica)
    code, output, seconds = traffic.release(5, fast_policy())
    print(f"candidate failing to load on one replica: exit {code} after {seconds:.1f} s\n{output}")
    assert code == 1, output
    status = traffic.admin("GET", "/admin/models/fraud/releases/current")
    gates = {g["gate"]: g for g in (status["last_decision"] or {"gates": []})["gates"]}
    if status["driver"] == REPLICAS[1]:
        assert "could not start" in status["detail"], status
    else:
        assert gates["load"]["verdict"] == "fail" and REPLICAS[1] in gates["load"]["detail"], status
    assert status["state"] == "rolled_back"
    for replica in range(len(REPLICAS)):
        model = traffic.admin("GET", "/admin/models/fraud", replica=replica)
        assert model["aliases"]["production"] == 1 and model["traffic"] == {} and model["shadow"] is None
    assert traffic.failures == []


def test_a_release_that_cannot_start_exits_3(fleet: Fleet) -> None:
    code, output, _ = fleet.release(1, fast_policy())
    assert code == 3 and "already serves production" in output, output
    code, output, _ = fleet.release(9, fast_policy())
    assert code == 3 and "404" in output, output


def wait_for_release(fleet: Fleet, done: Callable[[dict[str, Any]], bool], replica: int) -> dict[str, Any]:
    """Poll the release on `replica` until `done` holds (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + VERDICT_TIMEOUT_S
    while True:
        status: dict[str, Any] = fleet.admin("GET", "/admin/models/fraud/releases/current", replica=replica)
        if done(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_the_driving_replica_killed_mid_release_the_other_finishes_it(own_traffic: Fleet) -> None:
    traffic = own_traffic
    policy = {**fast_policy(), "shadow_bake_s": 2.0, "canary_bake_s": 2.0}
    started = time.monotonic()
    traffic.admin("POST", "/admin/models/fraud/releases", {"version": 2, "policy": policy})
    # Killed as soon as its first step is applied: the survivor has the rest of the schedule to run.
    status = wait_for_release(traffic, lambda s: s["state"] != "running" or s["step_started_at"] is not None, 0)
    assert status["state"] == "running", status
    killed = REPLICAS.index(status["driver"])
    traffic.down.add(killed)
    traffic.replicas[killed].process.kill()  # SIGKILL: no shutdown, the lease is left to lapse
    survivor = 1 - killed
    final = wait_for_release(traffic, lambda s: s["state"] != "running", survivor)
    print(f"driver killed at step {status['step']}: verdict after {time.monotonic() - started:.1f} s")
    assert final["state"] == "promoted" and final["driver"] == REPLICAS[survivor]
    model = traffic.admin("GET", "/admin/models/fraud", replica=survivor)
    assert model["aliases"]["production"] == 2 and model["traffic"] == {} and model["shadow"] is None
    entries = release_entries(traffic, final["id"])
    assert [e["state"] for e in entries if e["event"] == "verdict"] == ["promoted"]
    steps = [e["step"] for e in entries if e["event"] == "step"]
    assert sorted(steps) == sorted(set(steps)) == ["canary 25%", "canary 50%", "shadow"]
    assert traffic.failures == []


def test_the_release_routes_refuse_bad_input_precisely(own_fleet: Fleet) -> None:
    fleet = own_fleet

    def call(method: str, path: str, body: Any = None) -> tuple[int, str]:
        response = httpx.request(
            method, fleet.replicas[0].base_url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        return response.status_code, response.text

    status, text = call("GET", "/admin/models/fraud/releases/current")
    assert status == 404 and "has no release" in text
    status, text = call("POST", "/admin/models/fraud/releases/current/abort")
    assert status == 409 and "no running release" in text
    status, text = call("POST", "/admin/models/nope/releases", {"version": 2})
    assert status == 404 and "nope" in text
    status, text = call("POST", "/admin/models/fraud/releases", {"version": 2, "policy": {"canary_weights": [50, 5]}})
    assert status == 400 and "canary_weights" in text
    status, text = call("POST", "/admin/models/fraud/releases", {"version": 2, "policy": {"bake": 1}})
    assert status == 400 and "bake" in text
    status, text = call("POST", "/admin/models/fraud/releases", {"version": 2, "policy": fast_policy(deadline_s=600)})
    assert status == 201, text
    status, text = call("POST", "/admin/models/fraud/releases", {"version": 3})
    assert status == 409 and "is running" in text
    code, output = fleet.cli("status", "fraud")
    assert code == 0 and "of fraud v2 (production v1): running" in output, output
    code, output = fleet.cli("abort", "fraud")
    assert code == 0 and "abort requested by ci" in output, output
    final = wait_for_release(fleet, lambda s: s["state"] != "running", 1)
    assert final["state"] == "aborted"
    assert fleet.admin("GET", "/admin/models/fraud")["aliases"]["production"] == 1
