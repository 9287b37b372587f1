"""`hotserve models ...`: the operator's command line over the admin API (control path, client side).

`list`, `load`, `unload`, `promote MODEL VERSION`, `unalias MODEL ALIAS`, `rollback MODEL`,
`traffic`, `shadow`, `capture`, `evidence`, `replicas`, `history MODEL`, `rescan` against `--url` (or `HOTSERVE_URL`) with the token from `HOTSERVE_ADMIN_TOKEN`. Prints tables
(or the server's JSON with `--json`); any refusal exits 1 with the server's message. The
HTTP calls go through `server/admin_client.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from server.admin_client import AdminClient, AdminError, model_path
from server.admin_render import evidence_table, render
from server.contract.aliases import PRODUCTION

DEFAULT_URL = "http://127.0.0.1:8080"
ALIAS_IN_THE_WAY = re.compile(r"is named by alias '([^']+)'")
"""How the server refuses to unload a version an alias names (`server/registry/controller.py`)."""


# --- subcommands: each returns the server's JSON document -----------------------------------------

REQUIREMENTS = ("min_requests", "min_agreement", "max_p99_ratio", "max_error_ratio")
"""`promote` flags that become the promotion's requirements (`server/registry/promotion.py`)."""


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.model:
        return {"models": [client.call("GET", model_path(args.model))]}
    return client.call("GET", "/admin/models")


def _load(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", model_path(args.model, "versions", str(args.version), "load"))


def _unload(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", model_path(args.model, "versions", str(args.version), "unload"))


def _promote(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.alias != PRODUCTION:
        return client.call("PUT", model_path(args.model, "aliases", args.alias), {"version": args.version})
    requirements = {name: getattr(args, name) for name in REQUIREMENTS if getattr(args, name) is not None}
    return client.call(
        "POST",
        model_path(args.model, "promote"),
        {"version": args.version, "requirements": requirements or None, "force": args.force},
    )


def _traffic(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.clear:
        return client.call("DELETE", model_path(args.model, "traffic"))
    if not args.weights:
        raise AdminError("give weights (production=90 canary=10) or --clear")
    weights: dict[str, int] = {}
    for item in args.weights:
        target, _, weight = item.partition("=")
        if not target or not weight.isdigit():
            raise AdminError(f"{item!r}: expected TARGET=PERCENT, e.g. canary=10")
        weights[target] = int(weight)
    return client.call("PUT", model_path(args.model, "traffic"), {"weights": weights})


def _shadow(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.off:
        return client.call("DELETE", model_path(args.model, "shadow"))
    if args.version is None:
        raise AdminError("give the shadow VERSION, or --off")
    body: dict[str, Any] = {"version": args.version, "share": args.share}
    if args.tolerance is not None:
        body["tolerance"] = args.tolerance
    if args.threshold is not None:
        body["threshold"] = args.threshold
    return client.call("PUT", model_path(args.model, "shadow"), body)


def _capture(client: AdminClient, args: argparse.Namespace) -> Any:
    path = model_path(args.model, "capture")
    if args.off:
        return client.call("PUT", path, {"share": 0.0})
    if args.default:
        return client.call("DELETE", path)
    if args.share is None:
        return client.call("GET", path)
    return client.call("PUT", path, {"share": args.share})


def _evidence(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("GET", model_path(args.model, "versions", str(args.version), "evidence"))


def _replicas(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("GET", "/admin/replicas")


def _unalias(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("DELETE", model_path(args.model, "aliases", args.alias))


def _rollback(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.call("POST", model_path(args.model, "rollback"))


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
    "unalias": _unalias,
    "rollback": _rollback,
    "history": _history,
    "rescan": _rescan,
    "traffic": _traffic,
    "shadow": _shadow,
    "capture": _capture,
    "evidence": _evidence,
    "replicas": _replicas,
}


def _common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """`--url`, `--json` and `--timeout-s`, taken before the action or after it: the action's copy
    has no defaults (argparse.SUPPRESS), so it sets a value only when given there."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(os.environ.get("HOTSERVE_URL", DEFAULT_URL)),
        help=f"server base URL (env HOTSERVE_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the server's JSON, not tables"
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=default(300.0),
        help="how long to wait for the server (a load can take a while)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add_action(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    listing = add_action("list", help="models, their versions' state, aliases, memory")
    listing.add_argument("model", nargs="?")
    for name, text in [
        ("load", "load a version (it stays loaded)"),
        ("unload", "unload a version (refused while an alias names it)"),
    ]:
        action = add_action(name, help=text)
        action.add_argument("model")
        action.add_argument("version", type=_version)
    promote = add_action("promote", help="point production (or --alias) at a version, loading it first")
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
    unalias = add_action("unalias", help="delete an alias (not production: promote another version instead)")
    unalias.add_argument("model")
    unalias.add_argument("alias")
    traffic = add_action("traffic", help="split unpinned requests: production=90 canary=10")
    traffic.add_argument("model")
    traffic.add_argument("weights", nargs="*", metavar="TARGET=PERCENT")
    traffic.add_argument("--clear", action="store_true", help="everything to production again")
    shadow = add_action("shadow", help="copy a share of requests to a version, compare, never answer")
    shadow.add_argument("model")
    shadow.add_argument("version", type=_version, nargs="?")
    shadow.add_argument("--share", type=float, default=1.0, help="share of requests copied (default 1)")
    shadow.add_argument(
        "--tolerance",
        type=float,
        help="largest prediction difference counted as agreement (default: by the model's task, from "
        "model.json: binary, the same decision at its threshold; multiclass, the same label; "
        "regression, its recorded tolerance)",
    )
    shadow.add_argument("--threshold", type=float, help="decision threshold: agreement means the same side of it")
    shadow.add_argument("--off", action="store_true", help="stop shadowing")
    capture = add_action("capture", help="show or set the share of a model's answered requests captured")
    capture.add_argument("model")
    setting = capture.add_mutually_exclusive_group()
    setting.add_argument(
        "share", type=_capture_share, nargs="?", help="share to capture on every replica: 0..1 or a percentage (10%%)"
    )
    setting.add_argument("--off", action="store_true", help="capture none of the model's requests (share 0)")
    setting.add_argument(
        "--default", action="store_true", help="back to each replica's default share (HOTSERVE_CAPTURE_SAMPLE)"
    )
    evidence = add_action("evidence", help="what a candidate showed (canary answers, shadow comparisons)")
    evidence.add_argument("model")
    evidence.add_argument("version", type=_version)
    add_action("replicas", help="which routing revision each replica applied")
    rollback = add_action("rollback", help="return production to the version it held before")
    rollback.add_argument("model")
    history = add_action("history", help="the audit log of a model's changes")
    history.add_argument("model")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--since", help="ISO 8601 time, e.g. 2026-11-24T14:00:00Z")
    history.add_argument("--until", help="ISO 8601 time")
    add_action("rescan", help="scan the model repository for new versions")


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
        named = ALIAS_IN_THE_WAY.search(str(error))
        if args.action == "unload" and named:
            print(f"delete it with: hotserve models unalias {args.model} {named.group(1)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render(args.action, doc))
    return 0


def _capture_share(text: str) -> float:
    """`0.1` or `10%`, within 0..1."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is from 0 to 1 (or 0% to 100%), got {text!r}")
    return value


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a version is a positive integer, got {text!r}")
    return int(text)
