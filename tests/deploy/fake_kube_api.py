"""A stand-in Kubernetes API server process for the retrain webhook's tests (no real API server
can be started here): the batch/v1 calls the webhook makes, with bearer-token checks.

    python fake_kube_api.py PORT_FILE TOKEN NAMESPACE CRONJOB.json

Serves GET .../cronjobs/NAME, GET .../jobs?labelSelector=k=v, POST .../jobs (name from
generateName, uid, creationTimestamp; 422 for a body that is no Job), and, for the tests,
PUT .../jobs/NAME/status (finish a Job) and DELETE .../jobs (remove them all). Writes its port to PORT_FILE once listening.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATH = re.compile(
    r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>cronjobs|jobs)(?:/(?P<name>[^/]+))?(?P<status>/status)?$"
)


class State:
    def __init__(self, token: str, namespace: str, cronjob: dict[str, Any]) -> None:
        self.token = token
        self.namespace = namespace
        cronjob["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()))
        self.cronjob = cronjob
        self.jobs: dict[str, dict[str, Any]] = {}


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def answer(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def refused(self, status: int, message: str) -> None:
            self.answer(status, {"kind": "Status", "status": "Failure", "message": message, "code": status})

        def route(self) -> re.Match[str] | None:
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self.refused(401, "Unauthorized")
                return None
            match = PATH.match(urlsplit(self.path).path)
            if match is None or match["ns"] != state.namespace:
                self.refused(404, f"not found: {self.path}")
                return None
            return match

        def body(self) -> Any:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")

        def do_GET(self) -> None:
            match = self.route()
            if match is None:
                return
            if match["kind"] == "cronjobs":
                if match["name"] != state.cronjob["metadata"]["name"]:
                    self.refused(404, f'cronjobs.batch "{match["name"]}" not found')
                    return
                self.answer(200, state.cronjob)
                return
            selector = parse_qs(urlsplit(self.path).query).get("labelSelector", [""])[0]
            key, _, value = selector.partition("=")
            items = [j for j in state.jobs.values() if not key or j["metadata"].get("labels", {}).get(key) == value]
            self.answer(200, {"kind": "JobList", "apiVersion": "batch/v1", "items": items})

        def do_POST(self) -> None:
            match = self.route()
            if match is None:
                return
            job = self.body()
            if match["kind"] != "jobs" or match["name"] or not isinstance(job, dict) or job.get("kind") != "Job":
                self.refused(422, "a Job is created by POST .../jobs")
                return
            meta = job.get("metadata", {})
            if not (meta.get("name") or meta.get("generateName")) or "template" not in job.get("spec", {}):
                self.refused(422, "Job needs metadata.name or generateName, and spec.template")
                return
            name = meta.get("name") or meta["generateName"] + secrets.token_hex(3)[:5]
            meta.update(
                name=name,
                namespace=state.namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            job.update(metadata=meta, status={"active": 1})
            state.jobs[name] = job
            self.answer(201, job)

        def do_DELETE(self) -> None:
            """deletecollection of Jobs (a test's clean slate)."""
            match = self.route()
            if match is None:
                return
            if match["kind"] != "jobs" or match["name"]:
                self.refused(405, "only DELETE .../jobs")
                return
            state.jobs.clear()
            self.answer(200, {"kind": "Status", "status": "Success"})

        def do_PUT(self) -> None:
            match = self.route()
            if match is None:
                return
            if match["kind"] != "jobs" or not match["status"] or match["name"] not in state.jobs:
                self.refused(404, f"not found: {self.path}")
                return
            state.jobs[match["name"]]["status"] = self.body()["status"]
            self.answer(200, state.jobs[match["name"]])

    return Handler


def main() -> None:
    port_file, token, namespace, cronjob_file = sys.argv[1:5]
    state = State(token, namespace, json.loads(Path(cronjob_file).read_text()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
