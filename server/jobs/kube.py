"""The three Kubernetes API calls the retrain webhook makes, with the pod's ServiceAccount.

Read a CronJob, list the Jobs of the retrain, create a Job from the CronJob's template (what
`kubectl create job --from=cronjob/NAME` does). In a pod the API server, token, CA and namespace
come from the standard in-cluster places; the token file is read on every call (bound tokens
rotate). The standard library's HTTP client keeps the server's install free of a Kubernetes client.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    """The API server refused a call or could not be reached; `status` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class KubeConfig:
    api_url: str
    token_file: Path
    ca_file: Path | None
    namespace: str
    timeout_s: float = 10.0

    @classmethod
    def in_cluster(
        cls,
        api_url: str | None = None,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        namespace: str | None = None,
    ) -> KubeConfig:
        """The pod's own API server and ServiceAccount, each part overridable."""
        if api_url is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise KubeError("not in a Kubernetes pod (KUBERNETES_SERVICE_HOST unset): give --kube-api")
            api_url = f"https://{host}:{port}"
        if namespace is None:
            try:
                namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
            except OSError as error:
                raise KubeError(f"cannot read the pod's namespace: {error}; give --namespace") from None
        default_ca = SERVICE_ACCOUNT / "ca.crt"
        return cls(
            api_url=api_url.rstrip("/"),
            token_file=token_file or SERVICE_ACCOUNT / "token",
            ca_file=ca_file if ca_file is not None else (default_ca if default_ca.is_file() else None),
            namespace=namespace,
        )


class KubeClient:
    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._tls = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            token = self.config.token_file.read_text().strip()
        except OSError as error:
            raise KubeError(f"cannot read the ServiceAccount token: {error}") from None
        request = urllib.request.Request(
            self.config.api_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        context = self._tls if self.config.api_url.startswith("https://") else None
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s, context=context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            raise KubeError(f"{method} {path}: {error.code}: {message}", error.code) from None
        except (urllib.error.URLError, OSError) as error:
            raise KubeError(f"cannot reach the Kubernetes API at {self.config.api_url}: {error}") from None

    def _jobs_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{quote(self.config.namespace, safe='')}"

    def cronjob(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = self._call("GET", f"{self._jobs_path()}/cronjobs/{quote(name, safe='')}")
        return doc

    def jobs(self, selector: str) -> list[dict[str, Any]]:
        doc = self._call("GET", f"{self._jobs_path()}/jobs?{urlencode({'labelSelector': selector})}")
        items: list[dict[str, Any]] = doc.get("items", [])
        return items

    def create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = self._call("POST", f"{self._jobs_path()}/jobs", job)
        return doc
