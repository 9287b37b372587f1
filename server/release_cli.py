"""`hotserve release`: start, follow, read and abort a release over the admin API (client side).

`hotserve release MODEL VERSION [--policy FILE] [--wait]` starts one; with `--wait` it follows it
until the verdict (on a terminal one view updated in place, elsewhere a line per change, or JSON
lines with `--json`: `server/release_view.py`), ends with the line naming production, and exits
0 promoted, 1 rolled back (or aborted), 2 inconclusive; 3 when the server refused to start it (each way the
candidate cannot answer what production answers is printed; `--force` starts it anyway, audited).
`hotserve release status MODEL` and `hotserve release abort MODEL` read and abort the model's
release.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.admin_cli import DEFAULT_URL
from server.admin_client import AdminClient, AdminError, model_path
from server.release.policy import RegistryTarget, ReleasePolicy

if TYPE_CHECKING:  # rich is imported when a release is followed, not by every `hotserve` command
    from server.release_view import LineDisplay, LiveDisplay

EXIT_CODES = {"promoted": 0, "rolled_back": 1, "aborted": 1, "inconclusive": 2}
COULD_NOT_START = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", metavar="MODEL|status|abort")
    parser.add_argument("second", metavar="VERSION|MODEL")
    parser.add_argument("--policy", type=Path, help="release policy YAML (schedule, bake times, gate bounds)")
    parser.add_argument(
        "--registry-alias",
        metavar="ALIAS",
        help="record the verdict in the server's MLflow Model Registry: tag the version, and on "
        "promotion point ALIAS (e.g. champion) at it; a rollback leaves the alias where it was",
    )
    parser.add_argument(
        "--registered-model",
        metavar="NAME",
        help="with --registry-alias: the registered model (default: the one the version was imported from)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start even though the candidate cannot answer what production answers (inputs, outputs, "
        "feature spec, prediction contract, drift reference); audited",
    )
    parser.add_argument("--wait", action="store_true", help="follow the release until its verdict")
    parser.add_argument("--poll-s", type=float, default=1.0, help="how often --wait reads the release")
    parser.add_argument("--url", default=os.environ.get("HOTSERVE_URL", DEFAULT_URL), help="server base URL")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the server's JSON (with --wait: one document per change, a line each)",
    )
    parser.add_argument("--timeout-s", type=float, default=60.0, help="how long one call waits for the server")


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("HOTSERVE_ADMIN_TOKEN", "").strip()
    if not token:
        print("hotserve release: set HOTSERVE_ADMIN_TOKEN to an admin token", file=sys.stderr)
        return COULD_NOT_START
    client = AdminClient(args.url, token, args.timeout_s)
    if args.first in ("status", "abort"):
        path = model_path(args.second, "releases", "current")
        try:
            doc = client.call("GET", path) if args.first == "status" else client.call("POST", path + "/abort")
        except AdminError as error:
            print(f"hotserve release {args.first}: {error}", file=sys.stderr)
            return 1
        print(json.dumps(doc, indent=2) if args.json else progress(doc))
        return 0
    if not args.second.isdigit() or int(args.second) < 1:
        print(f"hotserve release: a version is a positive integer, got {args.second!r}", file=sys.stderr)
        return COULD_NOT_START
    try:
        policy = ReleasePolicy() if args.policy is None else ReleasePolicy.from_yaml(args.policy)
        if args.registry_alias is not None:
            target = RegistryTarget(alias=args.registry_alias, registered_model=args.registered_model)
            policy = policy.model_copy(update={"registry": target})
        elif args.registered_model is not None:
            raise ValueError("--registered-model needs --registry-alias")
    except ValueError as error:
        print(f"hotserve release: {error}", file=sys.stderr)
        return COULD_NOT_START
    body = {"version": int(args.second), "policy": policy.model_dump(mode="json"), "force": args.force}
    try:
        doc = client.call("POST", model_path(args.first, "releases"), body)
    except AdminError as error:
        differences = error.doc.get("differences") if isinstance(error.doc, dict) else None
        if differences:
            print(
                f"hotserve release: could not start: version {args.second} cannot answer what production answers:",
                *(f"  - {difference}" for difference in differences),
                "(--force starts it anyway; it is audited)",
                sep="\n",
                file=sys.stderr,
            )
        else:
            print(f"hotserve release: could not start: {error}", file=sys.stderr)
        return COULD_NOT_START
    if not args.wait:
        print(json.dumps(doc, indent=2) if args.json else progress(doc), flush=True)
        return 0
    from rich.console import Console

    from server.release_view import LineDisplay, LiveDisplay

    if sys.stdout.isatty() and not args.json:
        display: LineDisplay | LiveDisplay = LiveDisplay(Console())
    else:
        display = LineDisplay(sys.stdout, json_lines=args.json)
    return follow(lambda: client.call("GET", model_path(args.first, "releases", "current")), doc, args.poll_s, display)


def follow(
    read: Callable[[], dict[str, Any]],
    doc: dict[str, Any],
    poll_s: float,
    display: LineDisplay | LiveDisplay,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Show the release (`doc`, then what `read` returns every `poll_s`) until it finishes; its exit code."""
    display.show(doc)
    while doc["state"] == "running":
        sleep(poll_s)
        try:
            doc = read()
        except AdminError as error:  # a replica restarting: the release goes on server-side
            print(f"hotserve release: {error}; retrying", file=sys.stderr)
            continue
        display.show(doc)
    display.close(doc, progress(doc))
    return EXIT_CODES[doc["state"]]


def progress(doc: dict[str, Any]) -> str:
    """One block: the release, its step, and each gate's figures."""
    from server.release_view import figure

    head = f"release {doc['id']} of {doc['model']} v{doc['version']} (production v{doc['baseline']}): {doc['state']}"
    if doc.get("current_step"):
        head += f", step {doc['current_step']}"
    if doc.get("detail"):
        head += f" ({doc['detail']})"
    lines = [head]
    lines += [f"  forced past: {difference}" for difference in doc.get("forced") or ()]
    lines += [f"  cannot be judged: {gate}: {why}" for gate, why in sorted((doc.get("unjudgeable") or {}).items())]
    skipped = (doc.get("policy") or {}).get("skip_gates") or ()
    if skipped:
        lines.append(f"  skipped by the policy: {', '.join(skipped)}")
    decision = doc.get("last_decision")
    for gate in [] if decision is None else decision["gates"]:
        name = gate["gate"]
        measured = figure(name, gate["measured"])
        if gate.get("observed") is not None:  # the share seen, beside the confidence bound judged
            measured = f"{figure(name, gate['observed'])} (lower bound {measured})"
        lines.append(
            f"  {name:<11} {gate['verdict']:<12} measured {measured} bound {figure(name, gate['bound'])} "
            f"n={gate['samples']}  {gate['detail']}"
        )
    registry = doc.get("registry")
    if registry is not None:
        where = f"{registry['registered_model']} version {registry['registered_version']}"
        if registry["error"] is not None:
            lines.append(f"  registry: not updated: {registry['error']}")
        elif registry["alias_moved"]:
            lines.append(f"  registry: alias {registry['alias']!r} -> {where}; tagged with the verdict")
        else:
            lines.append(f"  registry: {where} tagged with the verdict; alias {registry['alias']!r} left where it was")
    return "\n".join(lines)
