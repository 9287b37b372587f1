"""The one HTTP client of the admin API: JSON over HTTP to `/admin`, with the bearer token.

Used by `hotserve models` (`admin_cli.py`), `hotserve features materialize --server`, and the
load tests' operator and benchmarks. The standard library's HTTP client keeps the server's
install free of a client dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote


class AdminError(Exception):
    """The server refused the call, or could not be reached; `doc` is its JSON answer, if any,
    and `status` its HTTP status (None when it could not be reached)."""

    def __init__(self, message: str, doc: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.doc = doc
        self.status = status


class AdminClient:
    """JSON over HTTP to `/admin`, with the bearer token."""

    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a 2xx; AdminError with the server's message otherwise."""
        status, doc, text = self._send(method, path, body)
        if not 200 <= status < 300:
            message = str(doc.get("error", doc)) if isinstance(doc, dict) else text.strip() or "no message"
            raise AdminError(f"{status}: {message}", doc, status)
        return doc

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON answer or None) whatever the status; AdminError only when unreachable."""
        status, doc, _ = self._send(method, path, body)
        return status, doc

    def post_bytes(self, path: str, data: bytes, content_type: str) -> Any:
        """POST a body of another type (labels as CSV or Parquet); the JSON answer of a 2xx,
        AdminError with the server's message otherwise."""
        status, doc, text = self._send("POST", path, None, (data, content_type))
        if not 200 <= status < 300:
            message = str(doc.get("error", doc)) if isinstance(doc, dict) else text.strip() or "no message"
            raise AdminError(f"{status}: {message}", doc, status)
        return doc

    def _send(self, method: str, path: str, body: Any, raw: tuple[bytes, str] | None = None) -> tuple[int, Any, str]:
        data, content_type = raw if raw is not None else (None, "application/json")
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                status, answer = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AdminError(f"cannot reach {self.url}: {reason}") from None
        text = answer.decode(errors="replace")
        try:
            doc = json.loads(answer) if answer else None
        except ValueError:
            doc = None
        return status, doc, text


def model_path(model: str, *rest: str) -> str:
    """`/admin/models/{model}/...`, each part quoted."""
    return "/admin/models/" + "/".join([quote(model, safe=""), *(quote(p, safe="") for p in rest)])
