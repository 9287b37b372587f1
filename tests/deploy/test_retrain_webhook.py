"""`hotserve retrain-webhook` as a real process against an API server process (no real Kubernetes
API server can be started here): Alertmanager's POST starts a Job made from the chart's own
CronJob, which Kubernetes' 1.30 schema accepts; repeats, resolved alerts and other alerts do not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.conftest import KUBE_VERSION, REPO, Render, one
from tests.deploy.test_helm_retrain import WEBHOOK

FAKE_API = Path(__file__).with_name("fake_kube_api.py")
KUBE_TOKEN = "serviceaccount-token-0123"
ALERT_TOKEN = "alert-token-0123"
NAMESPACE = "serving"
STARTUP_S = 60.0


@dataclass
class Webhook:
    url: str
    kube: httpx.Client

    def alert(
        self, status: str = "firing", alertname: str = "HotserveQualityBelowTraining", **labels: str
    ) -> httpx.Response:
        body = {
            "version": "4",
            "status": status,
            "receiver": "retrain",
            "groupLabels": {"alertname": alertname},
            "alerts": [
                {
                    "status": status,
                    "labels": {"alertname": alertname, "model": "fraud", **labels},
                    "annotations": {"summary": "live AUC below training"},
                    "startsAt": "2026-05-01T10:00:00Z",
                    "fingerprint": "3f2a9c",
                }
            ],
        }
        return httpx.post(
            f"{self.url}/alerts", json=body, headers={"Authorization": f"Bearer {ALERT_TOKEN}"}, timeout=30
        )

    def jobs(self) -> list[dict[str, Any]]:
        answer = self.kube.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")
        answer.raise_for_status()
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def finish(self, name: str) -> None:
        status = {"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
        self.kube.put(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status", json=status).raise_for_status()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(check: Any, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode}: {log.read_text()}")
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"not ready in {STARTUP_S} s: {log.read_text()}")


def _start(
    tmp_path: Path, cronjob: dict[str, Any], min_interval_s: float, name: str | None = None
) -> Iterator[Webhook]:
    """The API server process holding `cronjob`, and the webhook (for the CronJob `name`) against it."""
    (tmp_path / "token").write_text(KUBE_TOKEN)
    (tmp_path / "cronjob.json").write_text(json.dumps(cronjob))
    port_file = tmp_path / "kube-port"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        kube_log = tmp_path / "kube.log"
        with kube_log.open("wb") as out:
            kube = subprocess.Popen(
                [sys.executable, str(FAKE_API), str(port_file), KUBE_TOKEN, NAMESPACE, str(tmp_path / "cronjob.json")],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        processes.append(kube)
        kube_port = int(_wait(lambda: port_file.is_file() and port_file.read_text(), kube, kube_log))
        port = _free_port()
        log = tmp_path / "webhook.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOTSERVE_RETRAIN_WEBHOOK_TOKEN": ALERT_TOKEN}
        with log.open("wb") as out:
            webhook = subprocess.Popen(
                [
                    sys.executable, "-m", "server.cli", "retrain-webhook", "--cronjob", name or cronjob["metadata"]["name"],
                    "--model", "fraud", "--min-interval-s", str(min_interval_s), "--host", "127.0.0.1",
                    "--port", str(port), "--kube-api", f"http://127.0.0.1:{kube_port}",
                    "--kube-token-file", str(tmp_path / "token"), "--namespace", NAMESPACE,
                ],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip
        processes.append(webhook)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait(healthy, webhook, log)
        headers = {"Authorization": f"Bearer {KUBE_TOKEN}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{kube_port}", headers=headers, timeout=10) as client:
            yield Webhook(url, client)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def cronjob(render: Render) -> dict[str, Any]:
    """The chart's CronJob, as the API server would hold it."""
    return one(render(set_values=WEBHOOK), "CronJob")


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, cronjob: dict[str, Any]) -> Iterator[Webhook]:
    yield from _start(tmp_path_factory.mktemp("webhook"), cronjob, min_interval_s=3600)


@pytest.fixture
def webhook(started: Webhook) -> Webhook:
    """The module's webhook with no Jobs yet."""
    started.kube.delete(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs").raise_for_status()
    return started


def test_a_firing_quality_alert_creates_one_job_from_the_cronjob_template(
    webhook: Webhook, cronjob: dict[str, Any]
) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    answer = webhook.alert()
    assert answer.status_code == 200, answer.text
    created = answer.json()["created"]
    [job] = webhook.jobs()
    assert job["metadata"]["name"] == created and created.startswith("rel-hotserve-retrain-alert-")
    assert job["spec"] == cronjob["spec"]["jobTemplate"]["spec"]
    labels = job["metadata"]["labels"]
    assert labels["hotserve.io/retrain"] == "rel-hotserve-retrain" and labels["hotserve.io/trigger"] == "alert"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "rel-hotserve-retrain", True)
    assert job["metadata"]["annotations"]["hotserve.io/alert"] == "HotserveQualityBelowTraining 3f2a9c"
    kv.validate({k: v for k, v in job.items() if k != "status"}, KUBE_VERSION, strict=True)


def test_a_repeat_while_the_job_runs_and_within_the_interval_creates_none(webhook: Webhook) -> None:
    first = webhook.alert().json()["created"]
    again = webhook.alert().json()
    assert again["created"] is None and "already running" in again["detail"] and first in again["detail"]
    webhook.finish(first)
    later = webhook.alert().json()
    assert later["created"] is None and "minimum interval 3600 s" in later["detail"]
    assert len(webhook.jobs()) == 1


def test_a_finished_job_lets_the_next_alert_start_another(tmp_path: Path, cronjob: dict[str, Any]) -> None:
    for hook in _start(tmp_path, cronjob, min_interval_s=0):
        first = hook.alert().json()["created"]
        hook.finish(first)
        second = hook.alert().json()["created"]
        assert second is not None and second != first and len(hook.jobs()) == 2


@pytest.mark.parametrize(
    ("status", "alertname", "labels"),
    [
        ("resolved", "HotserveQualityBelowTraining", {}),
        ("firing", "HotserveDriftHigh", {}),
        ("firing", "HotserveQualityBelowTraining", {"model": "other"}),
    ],
    ids=["resolved", "another-alert", "another-model"],
)
def test_other_notifications_create_nothing(
    webhook: Webhook, status: str, alertname: str, labels: dict[str, str]
) -> None:
    answer = webhook.alert(status, alertname, **labels)
    assert answer.status_code == 200 and answer.json()["created"] is None
    assert webhook.jobs() == []


def test_without_the_token_or_with_a_bad_body_nothing_is_created(webhook: Webhook) -> None:
    assert httpx.post(f"{webhook.url}/alerts", json={"alerts": []}, timeout=10).status_code == 401
    wrong = httpx.post(f"{webhook.url}/alerts", json={}, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    bad = httpx.post(
        f"{webhook.url}/alerts", content=b"{", headers={"Authorization": f"Bearer {ALERT_TOKEN}"}, timeout=10
    )
    assert bad.status_code == 400 and "not an Alertmanager notification" in bad.json()["error"]
    assert webhook.jobs() == []


def test_an_api_server_refusal_is_a_502_for_alertmanager_to_retry(tmp_path: Path, cronjob: dict[str, Any]) -> None:
    for hook in _start(tmp_path, cronjob, min_interval_s=0, name="another-cronjob"):
        answer = hook.alert()
        assert answer.status_code == 502 and "not found" in answer.json()["error"]
        assert hook.jobs() == []
