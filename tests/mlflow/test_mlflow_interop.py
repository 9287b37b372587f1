"""MLflow interop against a real tracking server (SQLite backend, local artifact store): a tracked
training run, exports registered as registry versions, `hotserve import models:/...` served by a
real `hotserve serve` with the registry lineage, and training with MLflow down.

The commands run as a user runs them (`python -m server.cli train|export|import` subprocesses);
MLflow's own client reads back what they logged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from load_tests.server_process import REPO_ROOT, free_port, start_server
from tracking_server import TrackingServer

pytestmark = pytest.mark.integration

REGISTERED = "fraud-reg"


def hotserve(*args: str, tracking_uri: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTSERVE_", "MLFLOW_")) and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"hotserve {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def train_args(checkpoints: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "demo:fraud", "--rows", "1500", "--epochs", "2", "--hidden", "16", "--name",
            "fraud", "--checkpoints", str(checkpoints), "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-interop")


@pytest.fixture(scope="module")
def trained(tracking: TrackingServer, workdir: Path) -> Path:
    """One tracked training run: `<workdir>/checkpoints/fraud/1`."""
    hotserve(*train_args(workdir / "checkpoints", "--mlflow-experiment", "fraud-exp"), tracking_uri=tracking.uri)
    return workdir / "checkpoints" / "fraud" / "1"


@pytest.fixture(scope="module")
def registered(tracking: TrackingServer, trained: Path, workdir: Path) -> list[str]:
    """Two exports of the checkpoint, each registered: registry versions 1 and 2."""
    outputs = []
    for version in ("1", "2"):
        done = hotserve("export", str(trained), "--repository", str(workdir / "repository"), "--version", version,
                        "--register", REGISTERED, tracking_uri=tracking.uri)  # fmt: skip
        outputs.append(done.stdout + done.stderr)
    return outputs


def _metadata(checkpoint: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((checkpoint / "metadata.json").read_text())
    return data


def test_training_run_is_tracked_with_params_metrics_dataset_and_artifacts(
    tracking: TrackingServer, trained: Path
) -> None:
    metadata = _metadata(trained)
    ref = metadata["mlflow_run"]
    assert ref["tracking_uri"] == tracking.uri
    client = MlflowClient(tracking.uri)
    run = client.get_run(ref["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "fraud-exp"
    params = run.data.params
    assert params["epochs"] == "2" and params["lr"] == str(metadata["hyperparameters"]["lr"])
    assert json.loads(params["architecture_kwargs"])["hidden"] == [16]
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in history] == list(range(1, metadata["epochs_completed"] + 1))
    assert run.data.metrics["auc"] == pytest.approx(metadata["metrics"]["auc"])
    tags = run.data.tags
    assert tags["hotserve.model"] == "fraud" and tags["hotserve.version"] == "1"
    assert tags["hotserve.dataset_sha256"] == metadata["dataset_sha256"]
    assert tags["hotserve.library.torch"] == metadata["library_versions"]["torch"]
    if metadata["git_commit"] is not None:
        assert tags["mlflow.source.git.commit"] == metadata["git_commit"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == metadata["dataset_sha256"][:16]
    assert json.loads(dataset_input.dataset.profile)["sha256"] == metadata["dataset_sha256"]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint", "reference_histograms.json"} <= artifacts
    stored = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert {"checkpoint/checkpoint.pt", "checkpoint/metadata.json"} <= stored


def test_each_export_registers_a_new_version_tagged_with_the_hotserve_version(
    tracking: TrackingServer, trained: Path, registered: list[str]
) -> None:
    client = MlflowClient(tracking.uri)
    versions = sorted(client.search_model_versions(f"name='{REGISTERED}'"), key=lambda v: int(v.version))
    assert [v.version for v in versions] == ["1", "2"]
    run_id = _metadata(trained)["mlflow_run"]["run_id"]
    for version, hotserve_version in zip(versions, ("1", "2"), strict=True):
        assert version.run_id == run_id  # logged to the training's own run
        assert version.tags["hotserve.model"] == "fraud"
        assert version.tags["hotserve.version"] == hotserve_version
    assert f"registered {REGISTERED} version 1" in registered[0]


def test_import_of_an_alias_is_served_with_its_registry_lineage(
    tracking: TrackingServer, trained: Path, registered: list[str], workdir: Path
) -> None:
    client = MlflowClient(tracking.uri)
    client.set_registered_model_alias(REGISTERED, "champion", "1")
    repository = workdir / "imported-repository"
    done = hotserve("import", f"models:/{REGISTERED}@champion", "--name", "fraud", "--repository", str(repository),
                    tracking_uri=tracking.uri)  # fmt: skip
    assert f"fetched models:/{REGISTERED}@champion: {REGISTERED} version 1" in done.stdout
    run_id = _metadata(trained)["mlflow_run"]["run_id"]
    with start_server(repository, workdir / "serve.log") as server:
        with urllib.request.urlopen(f"{server.base_url}/v2/models/fraud", timeout=10) as r:
            lineage = json.loads(r.read())["lineage"]
        assert lineage["imported_from"]["registry"] == {
            "registry": "mlflow", "tracking_uri": tracking.uri, "name": REGISTERED, "version": "1",
            "alias": "champion", "run_id": run_id, "source": lineage["imported_from"]["registry"]["source"],
        }  # fmt: skip
        rows = np.zeros((2, 9), dtype=np.float32).ravel().tolist()
        body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 9], "data": rows}]})
        request = urllib.request.Request(f"{server.base_url}/v2/models/fraud/infer", data=body.encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200


def test_import_by_registry_version_records_no_alias(
    tracking: TrackingServer, registered: list[str], workdir: Path
) -> None:
    repository = workdir / "by-version"
    hotserve("import", f"models:/{REGISTERED}/2", "--name", "fraud", "--repository", str(repository),
             tracking_uri=tracking.uri)  # fmt: skip
    manifest = json.loads((repository / "fraud" / "1" / "model.json").read_text())
    registry = manifest["imported_from"]["registry"]
    assert (registry["name"], registry["version"], registry["alias"]) == (REGISTERED, "2", None)


def test_a_registry_round_trip_keeps_the_whole_model_json_contract(
    tracking: TrackingServer, registered: list[str], workdir: Path
) -> None:
    """Exported with --register, imported back from the registry: the feature spec, prediction
    contract, drift reference, lineage and batching are the exported version's, and nothing warns."""
    exported = json.loads((workdir / "repository" / "fraud" / "1" / "model.json").read_text())
    repository = workdir / "round-trip"
    done = hotserve("import", f"models:/{REGISTERED}/1", "--name", "fraud", "--repository", str(repository),
                    tracking_uri=tracking.uri)  # fmt: skip
    assert "warning" not in done.stderr, done.stderr
    imported = json.loads((repository / "fraud" / "1" / "model.json").read_text())
    assert exported["features"] is not None and exported["prediction"] is not None and exported["drift"] is not None
    for field in ("inputs", "outputs", "features", "prediction", "drift", "lineage", "batching"):
        assert imported[field] == exported[field], field
    assert imported["imported_from"]["registry"]["version"] == "1"


def test_a_registry_version_without_a_model_json_imports_with_a_warning_naming_what_is_lost(
    tracking: TrackingServer, registered: list[str], workdir: Path
) -> None:
    """The same graph registered by MLflow's own client (no hotserve model.json beside it)."""
    import mlflow
    import mlflow.onnx
    import onnx

    mlflow.set_tracking_uri(tracking.uri)
    with mlflow.start_run():
        graph = onnx.load(str(workdir / "repository" / "fraud" / "1" / "model.onnx"))
        mlflow.onnx.log_model(graph, name="model", registered_model_name="bare-reg")
    repository = workdir / "bare"
    done = hotserve("import", "models:/bare-reg/1", "--name", "fraud", "--repository", str(repository),
                    tracking_uri=tracking.uri)  # fmt: skip
    assert "hotserve import: warning: models:/bare-reg/1 carries no hotserve model.json" in done.stderr
    assert "features, prediction, drift not known" in done.stderr
    imported = json.loads((repository / "fraud" / "1" / "model.json").read_text())
    assert (imported["features"], imported["prediction"], imported["drift"]) == (None, None, None)


def test_a_registered_model_that_is_not_onnx_is_refused_naming_its_flavours(
    tracking: TrackingServer, workdir: Path
) -> None:
    import mlflow
    import mlflow.pyfunc

    class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input * 2

    mlflow.set_tracking_uri(tracking.uri)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Doubler(), registered_model_name="sk-reg")
    done = hotserve("import", "models:/sk-reg/1", "--name", "sk", "--repository", str(workdir / "sk-repository"),
                    tracking_uri=tracking.uri, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "models:/sk-reg/1 (version 1) is not an ONNX model: its flavours are python_function;" in done.stderr
    assert not (workdir / "sk-repository" / "sk").exists()


def test_training_completes_untracked_when_mlflow_is_down_unless_required(workdir: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    done = hotserve(*train_args(workdir / "untracked"), tracking_uri=down)
    assert "NOT TRACKED in MLflow" in done.stderr and "unreachable" in done.stderr
    assert _metadata(workdir / "untracked" / "fraud" / "1")["mlflow_run"] is None

    refused = hotserve(*train_args(workdir / "required", "--mlflow-required"), tracking_uri=down, check=False)
    assert refused.returncode != 0
    assert "unreachable" in refused.stderr.splitlines()[-1]
    assert not (workdir / "required" / "fraud").exists()


RELEASE_TOKEN = "mlflow-release-token-0123456789"


def release(server_url: str, version: int, policy: dict[str, Any], workdir: Path) -> tuple[int, str]:
    """`hotserve release fraud VERSION --registry-alias serving --wait`: exit code and output."""
    policy_file = workdir / f"release-policy-{version}.json"
    policy_file.write_text(json.dumps(policy))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTSERVE_", "MLFLOW_")) and k != "PYTHONPATH"}
    env |= {"PYTHONPATH": str(REPO_ROOT), "HOTSERVE_ADMIN_TOKEN": RELEASE_TOKEN}
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "release", "fraud", str(version), "--policy", str(policy_file),
         "--registry-alias", "serving", "--registered-model", REGISTERED, "--wait", "--poll-s", "0.2",
         "--url", server_url],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_a_release_moves_the_registry_alias_on_promotion_and_not_on_rollback(
    tracking: TrackingServer, registered: list[str], workdir: Path
) -> None:
    """hotserve versions 1 and 2 are registered versions 1 and 2 (the same graph, exported twice):
    releasing 2 promotes it and moves `serving` to registered version 2; releasing 1 back with a
    latency bound no candidate can meet rolls back and leaves `serving` on 2."""
    client = MlflowClient(tracking.uri)
    client.set_registered_model_alias(REGISTERED, "serving", "1")
    env = {
        "HOTSERVE_ADMIN_TOKENS": f"ci:{RELEASE_TOKEN}",
        "HOTSERVE_MLFLOW_TRACKING_URI": tracking.uri,
        "HOTSERVE_CONTROL_STATE_PATH": str(workdir / "release-control.json"),
        "HOTSERVE_AUDIT_LOG_PATH": str(workdir / "release-audit.jsonl"),
        "HOTSERVE_EVIDENCE_BUCKET_S": "0.5",
        "HOTSERVE_RELEASE_TICK_S": "0.25",
    }
    # The default gates; only the bake times are short.
    policy: dict[str, Any] = {
        "shadow_share": 1.0, "shadow_bake_s": 0.5, "canary_weights": [50], "canary_bake_s": 0.5,
        "deadline_s": 90.0, "gates": {},
    }  # fmt: skip
    with start_server(workdir / "repository", workdir / "release-serve.log", env=env) as server:
        admin = {"Authorization": f"Bearer {RELEASE_TOKEN}", "Content-Type": "application/json"}
        promote = urllib.request.Request(f"{server.base_url}/admin/models/fraud/promote", method="POST",
                                         data=b'{"version": 1}', headers=admin)  # fmt: skip
        urllib.request.urlopen(promote, timeout=30).close()
        stop = threading.Event()
        failures: list[str] = []
        sender = threading.Thread(target=send_until, args=(server.base_url, stop, failures), daemon=True)
        sender.start()
        try:
            code, output = release(server.base_url, 2, policy, workdir)
            assert code == 0, output
            assert f"registry: alias 'serving' -> {REGISTERED} version 2; tagged with the verdict" in output
            assert client.get_model_version_by_alias(REGISTERED, "serving").version == "2"
            tags = client.get_model_version(REGISTERED, "2").tags
            assert tags["hotserve.release.verdict"] == "promoted"
            evidence = json.loads(tags["hotserve.release.evidence"])
            assert evidence["steps"] == ["shadow", "canary 50%"] and evidence["release"] == tags["hotserve.release.id"]

            strict = {**policy, "gates": {**policy["gates"], "max_p99_ratio": 0.01}}
            code, output = release(server.base_url, 1, strict, workdir)
            assert code == 1, output
            assert "alias 'serving' left where it was" in output
            assert client.get_model_version_by_alias(REGISTERED, "serving").version == "2"
            tags = client.get_model_version(REGISTERED, "1").tags
            assert tags["hotserve.release.verdict"] == "rolled_back"
            gates = {g["gate"]: g["verdict"] for g in json.loads(tags["hotserve.release.evidence"])["gates"]}
            assert gates["p99_ratio"] == "fail"
        finally:
            stop.set()
            sender.join(timeout=30)
    assert failures == []


def send_until(base_url: str, stop: threading.Event, failures: list[str]) -> None:
    """Single-row requests until `stop`; any that is not answered 200 is recorded."""
    rows = np.random.default_rng(3).normal(size=(500, 9)).astype(np.float32)
    index = 0
    while not stop.is_set():
        row = rows[index % len(rows)].tolist()
        index += 1
        body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 9], "data": row}]})
        request = urllib.request.Request(f"{base_url}/v2/models/fraud/infer", data=body.encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status != 200:
                    failures.append(f"{response.status}")
        except OSError as error:
            failures.append(repr(error))
