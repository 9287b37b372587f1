"""`hotserve models ...`: the operator's command line over the admin API (control path, client side).

`list`, `load`, `unload`, `promote MODEL VERSION`, `rollback MODEL`, `history MODEL`, `rescan`
against `--url` (or `HOTSERVE_URL`) with the token from `HOTSERVE_ADMIN_TOKEN`. Prints tables
(or the server's JSON with `--json`); any refusal exits 1 with the server's message. The
standard library's HTTP client keeps the server's install free of a client dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_URL = "http://127.0.0.1:8080"
PRODUCTION = "production"


class AdminError(Exception):
    """The server refused the call, or could not be reached."""


class AdminClient:
    """JSON over HTTP to `/admin`, with the bearer token."""

    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise AdminError(f"{error.code}: {_message(error.read())}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AdminError(f"cannot reach {self._url}: {reason}") from None


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip() or "no message"
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)


def _model_path(model: str, *rest: str) -> str:
    return "/admin/models/" + "/".join([quote(model, safe=""), *(quote(p, safe="") for p in rest)])


# --- subcommands: each returns the server's JSON document -----------------------------------------


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.model:
        return {"models": [client.call("GET", _model_path(args.model))]}
    return client.call("GET", "/admin/models")


def _load(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", _model_path(args.model, "versions", str(args.version), "load"))


def _unload(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", _model_path(args.model, "versions", str(args.version), "unload"))


def _promote(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("PUT", _model_path(args.model, "aliases", args.alias), {"version": args.version})


def _rollback(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", _model_path(args.model, "rollback"))


def _history(client: AdminClient, args: argparse.Namespace) -> Any:
    query = {"model": args.model, "limit": args.limit, "since": args.since, "until": args.until}
    return client.call("GET", "/admin/audit?" + urlencode({k: v for k, v in query.items() if v is not None}))


def _rescan(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", "/admin/repository/rescan")


ACTIONS: dict[str, Callable[[AdminClient, argparse.Namespace], Any]] = {
    "list": _list, "load": _load, "unload": _unload, "promote": _promote,
    "rollback": _rollback, "history": _history, "rescan": _rescan,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("HOTSERVE_URL", DEFAULT_URL),
                        help=f"server base URL (env HOTSERVE_URL; default {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print the server's JSON, not tables")
    parser.add_argument("--timeout-s", type=float, default=300.0,
                        help="how long to wait for the server (a load can take a while)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="models, their versions' state, aliases, memory")
    listing.add_argument("model", nargs="?")
    for name, text in [("load", "load a version (it stays loaded)"),
                       ("unload", "unload a version (refused while an alias names it)")]:
        action = sub.add_parser(name, help=text)
        action.add_argument("model")
        action.add_argument("version", type=_version)
    promote = sub.add_parser("promote", help="point production (or --alias) at a version, loading it first")
    promote.add_argument("model")
    promote.add_argument("version", type=_version)
    promote.add_argument("--alias", default=PRODUCTION, help="alias to set (default production)")
    rollback = sub.add_parser("rollback", help="return production to the version it held before")
    rollback.add_argument("model")
    history = sub.add_parser("history", help="the audit log of a model's changes")
    history.add_argument("model")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--since", help="ISO 8601 time, e.g. 2026-11-24T14:00:00Z")
    history.add_argument("--until", help="ISO 8601 time")
    sub.add_parser("rescan", help="scan the model repository for new versions")


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("HOTSERVE_ADMIN_TOKEN", "").strip()
    if not token:
        print("hotserve models: set HOTSERVE_ADMIN_TOKEN to an admin token", file=sys.stderr)
        return 2
    client = AdminClient(args.url, token, args.timeout_s)
    try:
        doc = ACTIONS[args.action](client, args)
    except AdminError as error:
        print(f"hotserve models {args.action}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render(args.action, doc))
    return 0


# --- tables ---------------------------------------------------------------------------------------


def render(action: str, doc: Any) -> str:
    """The answer to `action` as text an operator reads."""
    if action == "history":
        return table(["AT", "WHO", "ACTION", "ALIAS", "FROM", "TO", "RESULT", "DETAIL"],
                     [[e["at"], e["who"], e["action"], e.get("alias"), e.get("from"), e.get("to"),
                       e["result"], e.get("detail")] for e in doc["entries"]])
    if action == "rescan":
        found = ", ".join(f"{x['model']} v{x['version']}" for x in doc["added"]) or "nothing new"
        gone = ", ".join(f"{x['model']} v{x['version']}" for x in doc["removed"]) or "nothing"
        return f"added: {found}\nremoved: {gone}"
    if action == "list":
        return models_table(doc["models"])
    return f"{describe_change(doc['change'])}\n\n{models_table([doc['model']])}"


def describe_change(change: dict[str, Any]) -> str:
    what = {"load": "loaded", "unload": "unloaded", "alias": "set", "rollback": "rolled back"}.get(
        change["action"], change["action"])
    target = change["model"] + (f" {change['alias']}" if change.get("alias") else "")
    moved = f"{_text(change.get('from'))} -> {_text(change.get('to'))}"
    if not change["changed"]:
        return f"no change: {target} already so ({moved}, revision {change['revision']})"
    return f"{what} {target}: {moved} (revision {change['revision']})"


def models_table(models: Sequence[dict[str, Any]]) -> str:
    rows = []
    for model in models:
        for v in model["versions"]:
            rows.append([model["name"] + (" (unloaded)" if model["stopped"] else ""), v["version"],
                         v["state"], ",".join(v["aliases"]),
                         "*" if model["serving"] == v["version"] else "",
                         v["loaded_at"], _seconds(v["load_duration_s"]), _mib(v["memory_bytes"]),
                         v["provider"], v["inflight"], v["reason"]])
    return table(["MODEL", "VERSION", "STATE", "ALIASES", "SERVING", "LOADED AT", "LOAD", "MEMORY",
                  "PROVIDER", "IN-FLIGHT", "REASON"], rows)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns; None shows as '-'."""
    cells = [headers] + [[_text(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}s"


def _mib(value: int | None) -> str | None:
    return None if value is None else f"{value / 2**20:.1f} MiB"


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a version is a positive integer, got {text!r}")
    return int(text)
