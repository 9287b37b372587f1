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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_URL = "http://127.0.0.1:8080"
PRODUCTION = "production"


class AdminError(Exception):
    """The server refused the call, or could not be reached; `doc` is its JSON answer, if any."""

    def __init__(self, message: str, doc: Any = None) -> None:
        super().__init__(message)
        self.doc = doc


class AdminClient:
    """JSON over HTTP to `/admin`, with the bearer token."""

    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            answer = error.read()
            raise AdminError(f"{error.code}: {_message(answer)}", _json_or_none(answer)) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AdminError(f"cannot reach {self._url}: {reason}") from None


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip() or "no message"
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _model_path(model: str, *rest: str) -> str:
    return "/admin/models/" + "/".join([quote(model, safe=""), *(quote(p, safe="") for p in rest)])


# --- subcommands: each returns the server's JSON document -----------------------------------------

REQUIREMENTS = ("min_requests", "min_agreement", "max_p99_ratio", "max_error_ratio")
"""`promote` flags that become the promotion's requirements (`server/registry/promotion.py`)."""


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.model:
        return {"models": [client.call("GET", _model_path(args.model))]}
    return client.call("GET", "/admin/models")


def _load(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", _model_path(args.model, "versions", str(args.version), "load"))


def _unload(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", _model_path(args.model, "versions", str(args.version), "unload"))


def _promote(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.alias != PRODUCTION:
        return client.call("PUT", _model_path(args.model, "aliases", args.alias), {"version": args.version})
    requirements = {name: getattr(args, name) for name in REQUIREMENTS if getattr(args, name) is not None}
    return client.call(
        "POST",
        _model_path(args.model, "promote"),
        {"version": args.version, "requirements": requirements or None, "force": args.force},
    )


def _traffic(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.clear:
        return client.call("DELETE", _model_path(args.model, "traffic"))
    if not args.weights:
        raise AdminError("give weights (production=90 canary=10) or --clear")
    weights: dict[str, int] = {}
    for item in args.weights:
        target, _, weight = item.partition("=")
        if not target or not weight.isdigit():
            raise AdminError(f"{item!r}: expected TARGET=PERCENT, e.g. canary=10")
        weights[target] = int(weight)
    return client.call("PUT", _model_path(args.model, "traffic"), {"weights": weights})


def _shadow(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.off:
        return client.call("DELETE", _model_path(args.model, "shadow"))
    if args.version is None:
        raise AdminError("give the shadow VERSION, or --off")
    body: dict[str, Any] = {"version": args.version, "share": args.share, "tolerance": args.tolerance}
    if args.threshold is not None:
        body["threshold"] = args.threshold
    return client.call("PUT", _model_path(args.model, "shadow"), body)


def _evidence(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("GET", _model_path(args.model, "versions", str(args.version), "evidence"))


def _replicas(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("GET", "/admin/replicas")


def _rollback(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", _model_path(args.model, "rollback"))


def _history(client: AdminClient, args: argparse.Namespace) -> Any:
    query = {"model": args.model, "limit": args.limit, "since": args.since, "until": args.until}
    return client.call("GET", "/admin/audit?" + urlencode({k: v for k, v in query.items() if v is not None}))


def _rescan(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", "/admin/repository/rescan")


ACTIONS: dict[str, Callable[[AdminClient, argparse.Namespace], Any]] = {
    "list": _list,
    "load": _load,
    "unload": _unload,
    "promote": _promote,
    "rollback": _rollback,
    "history": _history,
    "rescan": _rescan,
    "traffic": _traffic,
    "shadow": _shadow,
    "evidence": _evidence,
    "replicas": _replicas,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("HOTSERVE_URL", DEFAULT_URL),
        help=f"server base URL (env HOTSERVE_URL; default {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON, not tables")
    parser.add_argument(
        "--timeout-s", type=float, default=300.0, help="how long to wait for the server (a load can take a while)"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="models, their versions' state, aliases, memory")
    listing.add_argument("model", nargs="?")
    for name, text in [
        ("load", "load a version (it stays loaded)"),
        ("unload", "unload a version (refused while an alias names it)"),
    ]:
        action = sub.add_parser(name, help=text)
        action.add_argument("model")
        action.add_argument("version", type=_version)
    promote = sub.add_parser("promote", help="point production (or --alias) at a version, loading it first")
    promote.add_argument("model")
    promote.add_argument("version", type=_version)
    promote.add_argument("--alias", default=PRODUCTION, help="alias to set (default production)")
    promote.add_argument(
        "--min-requests",
        dest="min_requests",
        type=int,
        help="refuse unless this many canary answers + shadow comparisons were seen",
    )
    promote.add_argument(
        "--min-agreement",
        dest="min_agreement",
        type=float,
        help="refuse unless shadow answers agreed at least this often (0..1)",
    )
    promote.add_argument(
        "--max-p99-ratio",
        dest="max_p99_ratio",
        type=float,
        help="refuse if the candidate's p99 exceeds production's by more than this factor",
    )
    promote.add_argument(
        "--max-error-ratio",
        dest="max_error_ratio",
        type=float,
        help="refuse if more than this share of the candidate's answers were 5xx",
    )
    promote.add_argument(
        "--force", action="store_true", help="promote even if the evidence falls short (audited as forced)"
    )
    traffic = sub.add_parser("traffic", help="split unpinned requests: production=90 canary=10")
    traffic.add_argument("model")
    traffic.add_argument("weights", nargs="*", metavar="TARGET=PERCENT")
    traffic.add_argument("--clear", action="store_true", help="everything to production again")
    shadow = sub.add_parser("shadow", help="copy a share of requests to a version, compare, never answer")
    shadow.add_argument("model")
    shadow.add_argument("version", type=_version, nargs="?")
    shadow.add_argument("--share", type=float, default=1.0, help="share of requests copied (default 1)")
    shadow.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest output difference counted as agreement (default 1e-4)"
    )
    shadow.add_argument("--threshold", type=float, help="decision threshold: agreement means the same side of it")
    shadow.add_argument("--off", action="store_true", help="stop shadowing")
    evidence = sub.add_parser("evidence", help="what a candidate showed (canary answers, shadow comparisons)")
    evidence.add_argument("model")
    evidence.add_argument("version", type=_version)
    sub.add_parser("replicas", help="which routing revision each replica applied")
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
        if isinstance(error.doc, dict) and isinstance(error.doc.get("evidence"), dict):
            print(evidence_table(error.doc["evidence"]), file=sys.stderr)
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
        return table(
            ["AT", "WHO", "ACTION", "ALIAS", "FROM", "TO", "RESULT", "DETAIL"],
            [
                [
                    e["at"],
                    e["who"],
                    e["action"],
                    e.get("alias"),
                    e.get("from"),
                    e.get("to"),
                    e["result"],
                    e.get("detail"),
                ]
                for e in doc["entries"]
            ],
        )
    if action == "rescan":
        found = ", ".join(f"{x['model']} v{x['version']}" for x in doc["added"]) or "nothing new"
        gone = ", ".join(f"{x['model']} v{x['version']}" for x in doc["removed"]) or "nothing"
        return f"added: {found}\nremoved: {gone}"
    if action == "list":
        return models_table(doc["models"])
    if action == "evidence":
        return evidence_table(doc)
    if action == "replicas":
        return f"control revision {doc['revision']}\n" + table(
            ["REPLICA", "APPLIED REVISION", "REPORTED", "SPLIT (VERSION=PERCENT)", "FALLBACKS"],
            [
                [
                    r["replica"],
                    r["revision"],
                    r["reported_at"],
                    "; ".join(
                        f"{m}: " + ", ".join(f"v{v}={w}" for v, w in sorted(ws.items()))
                        for m, ws in sorted(r["models"].items())
                    ),
                    "; ".join(r["fallbacks"]),
                ]
                for r in doc["replicas"]
            ],
        )
    return f"{describe_change(doc['change'])}\n\n{models_table([doc['model']])}"


def describe_change(change: dict[str, Any]) -> str:
    what = {
        "load": "loaded",
        "unload": "unloaded",
        "alias": "set",
        "rollback": "rolled back",
        "promote": "promoted",
        "traffic": "traffic set",
        "shadow": "shadow set",
    }.get(change["action"], change["action"])
    target = change["model"] + (f" {change['alias']}" if change.get("alias") else "")
    moved = f"{_text(change.get('from'))} -> {_text(change.get('to'))}"
    if not change["changed"]:
        return f"no change: {target} already so ({moved}, revision {change['revision']})"
    return f"{what} {target}: {moved} (revision {change['revision']})"


def evidence_table(evidence: dict[str, Any]) -> str:
    candidate, production = evidence["candidate"], evidence.get("production") or {}
    return table(
        ["EVIDENCE", "VALUE"],
        [
            ["canary answers (5xx)", f"{candidate['requests']} ({candidate['errors']})"],
            ["p99 candidate / production", f"{_ms(candidate.get('p99_s'))} / {_ms(production.get('p99_s'))}"],
            ["p99 ratio", _text(evidence.get("p99_ratio"))],
            ["error ratio", _text(evidence.get("error_ratio"))],
            [
                "shadow compared (dropped, failed)",
                f"{evidence['shadow_compared']} ({evidence['shadow_dropped']}, {evidence['shadow_failed']})",
            ],
            ["shadow agreement", _text(evidence.get("shadow_agreement"))],
            ["observed", evidence["observed"]],
            ["window (both versions)", _window(evidence.get("since"), evidence.get("until"))],
        ],
    )


def _window(since: float | None, until: float | None) -> str:
    if since is None or until is None:
        return "-"  # a server from before the evidence recorder
    start, end = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) for t in (since, until))
    return f"{start} to {end} UTC"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def models_table(models: Sequence[dict[str, Any]]) -> str:
    rows = []
    for model in models:
        for v in model["versions"]:
            rows.append(
                [
                    model["name"] + (" (unloaded)" if model["stopped"] else ""),
                    v["version"],
                    v["state"],
                    ",".join(v["aliases"]),
                    "*" if model["serving"] == v["version"] else "",
                    v["loaded_at"],
                    _seconds(v["load_duration_s"]),
                    _mib(v["memory_bytes"]),
                    v["provider"],
                    v["inflight"],
                    v["reason"],
                ]
            )
    return table(
        [
            "MODEL",
            "VERSION",
            "STATE",
            "ALIASES",
            "SERVING",
            "LOADED AT",
            "LOAD",
            "MEMORY",
            "PROVIDER",
            "IN-FLIGHT",
            "REASON",
        ],
        rows,
    )


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns; None shows as '-'."""
    cells = [headers] + [[_text(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells
    )


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
