"""From a firing alert to one retrain Job: which alerts count, when a Job is already enough, and
the Job itself, made from the CronJob's template as `kubectl create job --from=cronjob/NAME` does.

Kubernetes keeps the state: a Job of the retrain that has not finished means one is running (the
scheduled ones carry the same label), and the newest Job an alert started says when the last
was, so Alertmanager's repeats while the alert keeps firing start at most one Job per interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.jobs.kube import KubeClient

RETRAIN_LABEL = "hotserve.io/retrain"
"""On every Job of the retrain (the CronJob's template sets it): its value is the CronJob's name."""
TRIGGER_LABEL = "hotserve.io/trigger"
ALERT_ANNOTATION = "hotserve.io/alert"


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    fingerprint: str = ""
    startsAt: str = ""


class Notification(BaseModel):
    """Alertmanager's webhook body (version 4); fields hotserve does not read are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = "4"
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[Alert]


@dataclass(frozen=True)
class Outcome:
    created: str | None
    """The Job's name when one was created."""
    detail: str


def _finished(job: dict[str, Any]) -> bool:
    conditions = job.get("status", {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def _created_at(job: dict[str, Any]) -> float:
    stamp = job.get("metadata", {}).get("creationTimestamp", "")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def job_from(cronjob: dict[str, Any], alert: Alert) -> dict[str, Any]:
    """A Job of the CronJob's template, owned by the CronJob, saying which alert started it."""
    meta, template = cronjob["metadata"], cronjob["spec"]["jobTemplate"]
    template_meta = template.get("metadata", {})
    name = meta["name"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": f"{name}-alert-"[:58],
            "labels": {**template_meta.get("labels", {}), RETRAIN_LABEL: name, TRIGGER_LABEL: "alert"},
            "annotations": {
                **template_meta.get("annotations", {}),
                "cronjob.kubernetes.io/instantiate": "manual",
                ALERT_ANNOTATION: f"{alert.labels.get('alertname', '')} {alert.fingerprint}".strip(),
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }


class Trigger:
    """Starts the CronJob's retrain for a firing alert of `alert_names` (about `model`, when set)."""

    def __init__(
        self,
        client: KubeClient,
        cronjob: str,
        alert_names: Sequence[str],
        model: str | None,
        min_interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.cronjob = cronjob
        self.alert_names = frozenset(alert_names)
        self.model = model
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._lock = threading.Lock()

    def wanted(self, alert: Alert) -> bool:
        if alert.status != "firing" or alert.labels.get("alertname") not in self.alert_names:
            return False
        return self.model is None or alert.labels.get("model") in (None, self.model)

    def handle(self, notification: Notification) -> Outcome:
        """Create at most one Job (blocking: the Kubernetes API is called)."""
        alert = next((a for a in notification.alerts if self.wanted(a)), None)
        if alert is None:
            names = ", ".join(sorted(self.alert_names))
            return Outcome(None, f"no firing alert of {names}" + (f" for model {self.model}" if self.model else ""))
        with self._lock:  # one decision at a time in this process (run one webhook replica)
            jobs = self.client.jobs(f"{RETRAIN_LABEL}={self.cronjob}")
            running = sorted(j["metadata"]["name"] for j in jobs if not _finished(j))
            if running:
                return Outcome(None, f"a retrain is already running: {', '.join(running)}")
            started = [_created_at(j) for j in jobs if j["metadata"].get("labels", {}).get(TRIGGER_LABEL) == "alert"]
            since = self.clock() - max(started, default=float("-inf"))
            if since < self.min_interval_s:
                return Outcome(
                    None, f"an alert started a retrain {since:.0f} s ago (minimum interval {self.min_interval_s:.0f} s)"
                )
            created = self.client.create_job(job_from(self.client.cronjob(self.cronjob), alert))
        name = created.get("metadata", {}).get("name", "?")
        return Outcome(name, f"created Job {name} from CronJob {self.cronjob} for {alert.labels.get('alertname')}")
