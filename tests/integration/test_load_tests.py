"""`python -m load_tests` end to end, small: a few seconds of mixed traffic with the operator releasing
a version through it, against a real server on two tiny fraud scorers, then the SLO gate both ways.

The runner runs as a subprocess (locust patches the standard library on import). The full runs
(minutes, documented in docs/benchmarks.md) are commands, not tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fraud_scorer import COLUMNS, fraud_rows, scorer_model
from load_tests.found_state import admin_request
from load_tests.server_process import REPO_ROOT, start_server
from onnx_models import write_version
from server.contract.manifest import BatchingPolicy, FeatureSpec, FeatureView, StoredFeature
from training.datasets.fraud import ENTITY_KEY, REQUEST_FEATURES, STORE_FEATURES

pytestmark = pytest.mark.integration

PASSING_SLO = {
    "p99_ms": {"v2_json": 5000, "v2_binary": 5000, "v1_features": 5000, "v1_unknown_entity": 5000},
    "max_error_ratio": 0.0,
    "min_throughput_rps": 1,
    "zero_failures_during_promotions": True,
}


def write_repository(root: Path) -> Path:
    """fraud v1 and v2: the same scorer (answers agree exactly) reading the demo customers' stored
    features by `customer_id`, as the demo export does."""
    reference = fraud_rows(seed=0, rows=2000, generated=2000)
    view = FeatureView(
        name="fraud", entity_key=ENTITY_KEY, features=[StoredFeature(name=name) for name in STORE_FEATURES]
    )
    spec = FeatureSpec(
        input="features",
        columns=COLUMNS,
        request_features=REQUEST_FEATURES,
        store_features=STORE_FEATURES,
        entity_key=ENTITY_KEY,
        view=view,
    )
    for version in (1, 2):
        write_version(
            root,
            "fraud",
            version,
            scorer_model(reference.mean(axis=0), reference.std(axis=0)),
            [("features", "FP32", [-1, len(COLUMNS)])],
            [("score", "FP32", [-1, 1])],
            BatchingPolicy(max_batch_size=32, max_queue_delay_ms=1.0),
            spec,
        )
    return root


def load_tests(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_")}
    if token is not None:
        env["HOTSERVE_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "load_tests", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
    )


@pytest.fixture(scope="module")
def release_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One short run: 8 users for 5 s, the operator stepping every 0.4 s, gated by PASSING_SLO."""
    tmp = tmp_path_factory.mktemp("loadtest")
    slo = tmp / "slo.yaml"
    slo.write_text(json.dumps(PASSING_SLO))  # JSON is YAML too
    out = tmp / "out"
    done = load_tests(
        "run",
        "--repository",
        str(write_repository(tmp / "repository")),
        "--out",
        str(out),
        "--users",
        "8",
        "--spawn-rate",
        "8",
        "--duration",
        "5",
        "--rate-per-user",
        "20",
        "--unknown-share",
        "0.2",
        "--operator-interval",
        "0.4",
        "--slo",
        str(slo),
        "--promotion-requirements",
        '{"min_requests": 5, "min_agreement": 0.99, "max_p99_ratio": 100, "max_error_ratio": 0.01}',
    )
    return done, out


def summary_of(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return doc


def test_a_short_mixed_run_with_the_operator_checks_every_answer_and_passes_its_slo(
    release_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = release_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SLO gate: all 7 passed" in done.stdout
    doc = summary_of(out)
    assert doc["total"]["failures"] == 0 and doc["failures"] == [] and doc["user_errors"] == []
    for scenario in ("v2_json", "v2_binary", "v1_features", "v1_unknown_entity"):
        assert doc["scenarios"][scenario]["requests"] > 0, scenario  # unknown entities: each one a checked 404
    assert set(doc["versions_answered"]) == {"1", "2"}  # the canary and the promoted version answered


def test_the_operator_releases_and_rolls_back_a_version_with_no_failed_request_around_it(
    release_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = release_run
    doc = summary_of(out)
    done = [(e["action"], e["ok"]) for e in doc["events"]]
    for action in ("load", "canary", "traffic", "shadow", "promote", "clear traffic", "clear shadow", "rollback"):
        assert (action, True) in done, done
    assert all(ok for _, ok in done), done
    windows = doc["promotions"]["windows"]
    assert [w["action"] for w in windows][:2] == ["promote", "rollback"]
    assert doc["promotions"]["requests"] > 0 and doc["promotions"]["failures"] == 0


def test_the_run_leaves_locust_reports_plots_and_the_model_as_it_found_it(
    release_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = release_run
    doc = summary_of(out)
    for name in (
        "locust_stats.csv",
        "locust_stats_history.csv",
        "locust_failures.csv",
        "locust.html",
        "latency_over_time.png",
        "version_share.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "locust_stats.csv").read_text().count("\n") > 4
    assert doc["cpu"]["generator_cores"] > 0 and doc["cpu"]["server_cores"] > 0
    audit = [json.loads(line) for line in (out / "control" / "audit.jsonl").read_text().splitlines()]
    production = [a for a in audit if a.get("alias") == "production" and a.get("result") == "ok"]
    assert production and production[-1]["to"] == 1  # the last change put production back on v1


def test_the_slo_gate_fails_naming_each_target_set_below_what_the_server_achieved(
    release_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _, out = release_run
    doc = summary_of(out)
    measured_p99 = doc["scenarios"]["v2_json"]["p99_ms"]
    achieved = doc["total"]["prediction_requests_per_s"]
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        f"p99_ms:\n  v2_json: {measured_p99 / 2}\n  v2_binary: 5000\n"
        f"min_throughput_rps: {achieved * 10}\nmax_error_ratio: 0\n"
    )
    failed = load_tests("check", str(out / "summary.json"), "--slo", str(strict))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"FAIL p99 v2_json: measured {measured_p99:g} ms, target <= {measured_p99 / 2:g} ms" in failed.stdout
    assert f"FAIL throughput: measured {achieved:.1f} req/s" in failed.stdout
    assert "PASS p99 v2_binary" in failed.stdout and "PASS error ratio" in failed.stdout
    assert "SLO gate: 2 of 4 failed" in failed.stdout

    relaxed = tmp_path / "relaxed.yaml"
    relaxed.write_text(f"p99_ms:\n  v2_json: {measured_p99 * 2}\nmin_throughput_rps: {achieved / 2}\n")
    passed = load_tests("check", str(out / "summary.json"), "--slo", str(relaxed))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "SLO gate: all 2 passed" in passed.stdout


def test_a_run_against_a_given_server_leaves_someone_elses_canary_alone_and_says_what_it_could_not_reach(
    tmp_path: Path,
) -> None:
    token = "loadtest-url-token-0123456789"
    repository = write_repository(tmp_path / "repository")
    env = {"HOTSERVE_ADMIN_TOKEN": token, "HOTSERVE_FEATURE_TABLE": "demo:fraud"}
    with start_server(repository, tmp_path / "server.log", env=env) as server:
        status, _ = admin_request(server.base_url, token, "PUT", "/admin/models/fraud/aliases/canary", {"version": 2})
        assert status == 200
        common = ["--url", server.base_url, "--out", str(tmp_path / "out"), "--users", "3", "--spawn-rate", "3"]
        refused = load_tests("run", *common, "--duration", "1", token=token)
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "model 'fraud' already has alias canary -> v2: the operator would overwrite" in refused.stderr
        _, doc = admin_request(server.base_url, token, "GET", "/admin/models/fraud")
        assert doc["aliases"]["canary"] == 2  # untouched

        slo = tmp_path / "slo.yaml"
        slo.write_text("min_throughput_rps: 100000\nzero_failures_during_promotions: true\n")
        done = load_tests("run", *common, "--duration", "2", "--no-operator", "--slo", str(slo), token=token)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "server cores not measured (--url: a server this command did not start)" in done.stdout
        assert "target >= 100000 req/s (unreachable with this run's settings: it offers at most 75 req/s" in done.stdout
        assert "SKIP zero failures during promotions" in done.stdout
        _, after = admin_request(server.base_url, token, "GET", "/admin/models/fraud")
        assert after["aliases"] == doc["aliases"]

        broken = tmp_path / "broken.yaml"
        broken.write_text("p99_ms: [\n")
        unusable = load_tests("run", *common, "--slo", str(broken), token=token)
        assert unusable.returncode == 3 and "Traceback" not in unusable.stderr
        assert unusable.stderr.strip().startswith(f"python -m load_tests run: SLO file {broken}: not YAML")
