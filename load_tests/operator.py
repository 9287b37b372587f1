"""The operator user: a release rehearsed through the admin API while prediction traffic flows.

One cycle, a pause of `interval_s` between steps: load the candidate version; name it `canary`
and split traffic (production/canary); add it as a shadow; promote it with evidence
requirements (refused evidence is a failure, with the server's evidence in the message);
clear the split and the shadow; roll `production` back; drop the canary alias. The cycle
repeats until the run ends, so every run ends a cycle with the model as it started, and
`restore` puts it back if the run stopped mid-cycle. Each call is a locust request (`admin
...`), checked, and an `Event` on the recorder's timeline (the plots mark them; the
promotion SLO counts failed predictions around `promote` and `rollback`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gevent
from locust import FastHttpUser, constant, task

from load_tests.recorder import Event, Recorder
from server.admin_client import AdminClient
from server.contract.aliases import CANARY, PRODUCTION


@dataclass(frozen=True)
class OperatorPlan:
    """What the operator does, and with what."""

    model: str
    token: str
    interval_s: float = 5.0
    canary_weight: int = 10
    shadow_share: float = 0.2
    shadow_tolerance: float = 1e-4
    requirements: dict[str, Any] = field(
        default_factory=lambda: {
            "min_requests": 100,
            "min_agreement": 0.99,
            "max_p99_ratio": 2.0,
            "max_error_ratio": 0.01,
        }
    )


class AdminRefused(Exception):
    """An admin call that did not do what the operator asked."""


class OperatorUser(FastHttpUser):
    """Runs release cycles; one per run (`fixed_count`)."""

    abstract = True
    fixed_count = 1
    wait_time = constant(0)
    plan: ClassVar[OperatorPlan]
    recorder: ClassVar[Recorder]

    @task
    def release_cycle(self) -> None:
        plan = self.plan
        base = f"/admin/models/{plan.model}"
        gevent.sleep(plan.interval_s)
        production, candidate = self._versions()
        if candidate is None:
            self._call(
                "discover",
                "GET",
                base,
                None,
                expect=lambda doc: _refuse(
                    f"{plan.model} has no version besides production {production}: nothing to release"
                ),
            )
            return
        self._call("load", "POST", f"{base}/versions/{candidate}/load", None)
        gevent.sleep(plan.interval_s)
        self._call("canary", "PUT", f"{base}/aliases/{CANARY}", {"version": candidate})
        self._call(
            "traffic",
            "PUT",
            f"{base}/traffic",
            {"weights": {PRODUCTION: 100 - plan.canary_weight, CANARY: plan.canary_weight}},
        )
        gevent.sleep(plan.interval_s)
        self._call(
            "shadow",
            "PUT",
            f"{base}/shadow",
            {"version": candidate, "share": plan.shadow_share, "tolerance": plan.shadow_tolerance, "threshold": None},
        )
        gevent.sleep(plan.interval_s)
        self._call(
            "promote",
            "POST",
            f"{base}/promote",
            {"version": candidate, "requirements": plan.requirements, "force": False},
        )
        self._expect_production(candidate)
        self._call("clear traffic", "DELETE", f"{base}/traffic", None)
        self._call("clear shadow", "DELETE", f"{base}/shadow", None)
        gevent.sleep(plan.interval_s)
        self._call("rollback", "POST", f"{base}/rollback", None)
        self._expect_production(production)
        self._call("drop canary", "DELETE", f"{base}/aliases/{CANARY}", None)

    def _versions(self) -> tuple[int, int | None]:
        """(production, the newest other version) as the admin API reports them."""
        doc = self._call("state", "GET", f"/admin/models/{self.plan.model}", None)
        production = (
            int(doc["aliases"][PRODUCTION])
            if doc and PRODUCTION in doc.get("aliases", {})
            else int(doc["serving"])
            if doc and doc.get("serving")
            else 0
        )
        others = [int(v["version"]) for v in (doc or {}).get("versions", []) if int(v["version"]) != production]
        return production, max(others) if others else None

    def _expect_production(self, version: int) -> None:
        self._call(
            "state",
            "GET",
            f"/admin/models/{self.plan.model}",
            None,
            expect=lambda doc: (
                None
                if doc.get("aliases", {}).get(PRODUCTION) == version
                else _refuse(f"production is {doc.get('aliases', {}).get('production')}, expected {version}")
            ),
        )

    def _call(
        self,
        action: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        expect: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any] | None:
        """One admin call as a checked locust request and a timeline event; the answer's JSON."""
        # A fresh connection per call, as a CLI makes: the operator idles for `interval_s` between
        # calls, and a pooled connection the server closes as idle (uvicorn: after 5 s) at the
        # moment a call goes out is reset under it (the HTTP keep-alive race).
        headers = {"Authorization": f"Bearer {self.plan.token}", "Connection": "close"}
        started = time.time()
        doc: dict[str, Any] | None = None
        ok, detail = False, ""
        with self.client.request(
            method, path, name=f"admin {action}", json=body, headers=headers, catch_response=True
        ) as response:
            text = response.content.decode(errors="replace") if isinstance(response.content, bytes) else ""
            try:
                if not 200 <= response.status_code < 300:
                    raise AdminRefused(f"{method} {path}: {response.status_code} {text[:400]}")
                doc = json.loads(text) if text else {}
                if expect is not None:
                    expect(doc)
            except (AdminRefused, ValueError) as exc:
                detail = str(exc)
                response.failure(detail)
            else:
                ok = True
                response.success()
        if action != "state":
            self.recorder.record_event(Event(action, started, time.time(), ok, detail))
        return doc


def _refuse(message: str) -> None:
    raise AdminRefused(message)


def admin_request(
    host: str, token: str, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 60.0
) -> tuple[int, dict[str, Any]]:
    """One admin call outside locust (set-up and clean-up): (status, JSON answer; {} without one)."""
    status, doc = AdminClient(host, token, timeout_s).request(method, path, body)
    return status, doc if isinstance(doc, dict) else {}


def production_of(host: str, token: str, model: str) -> int | None:
    status, doc = admin_request(host, token, "GET", f"/admin/models/{model}")
    if status != 200:
        raise AdminRefused(f"GET /admin/models/{model}: {status} {doc}")
    value = doc.get("aliases", {}).get(PRODUCTION)
    return int(value) if value is not None else None


def restore(host: str, token: str, model: str, production: int | None) -> list[str]:
    """Undo what a cycle cut short left behind: split, shadow, canary alias, production. Returns
    what it had to change (empty when the run ended between cycles)."""
    undone = []
    base = f"/admin/models/{model}"
    _, doc = admin_request(host, token, "GET", base)
    for what in ("traffic", "shadow"):
        status, _ = admin_request(host, token, "DELETE", f"{base}/{what}")
        if doc.get(what) and status == 200:
            undone.append(f"cleared {what}")
    if CANARY in doc.get("aliases", {}):
        admin_request(host, token, "DELETE", f"{base}/aliases/{CANARY}")
        undone.append(f"dropped {CANARY}")
    if production is not None and doc.get("aliases", {}).get(PRODUCTION) != production:
        admin_request(host, token, "PUT", f"{base}/aliases/{PRODUCTION}", {"version": production})
        undone.append(f"production back to {production}")
    return undone
