"""What `hotserve models ...` prints: the admin API's JSON answers as sentences and tables.

Each change is said as what it did ("promoted fraud production: 2 -> 3", "traffic set for fraud:
production=90, canary=10 (v2 90%, v4 10%)"), or why nothing changed; numbers are rounded to
what an operator reads, times are UTC with their age, forced promotions say so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

UNLOADED_STATES = frozenset({"AVAILABLE", "UNLOADED", "FAILED"})
"""Version states that hold no session: their last load's figures are history, not cost."""


def render(action: str, doc: Any, now: float | None = None) -> str:
    """The answer to `action` as text an operator reads."""
    if action == "history":
        return history_table(doc["entries"])
    if action == "rescan":
        found = ", ".join(f"{x['model']} v{x['version']}" for x in doc["added"]) or "nothing new"
        gone = ", ".join(f"{x['model']} v{x['version']}" for x in doc["removed"]) or "nothing"
        return f"added: {found}\nremoved: {gone}"
    if action == "list":
        return models_table(doc["models"])
    if action == "evidence":
        return evidence_table(doc)
    if action == "replicas":
        return replicas_table(doc, time.time() if now is None else now)
    if action == "capture":
        return capture_text(doc) if "change" not in doc else describe_change(doc["change"], doc["model"])
    return f"{describe_change(doc['change'], doc['model'])}\n\n{models_table([doc['model']])}"


# --- changes --------------------------------------------------------------------------------------


def describe_change(change: dict[str, Any], model: dict[str, Any]) -> str:
    """One line: what the change did, with the model's state after it (`model`)."""
    action, name, alias = change["action"], change["model"], change.get("alias")
    before, after, changed = change.get("from"), change.get("to"), change["changed"]
    revision = f"(revision {change['revision']})"
    if action in ("promote", "rollback", "alias"):
        what = {"promote": "promoted", "rollback": "rolled back", "alias": "set"}[action]
        if not changed:
            return f"no change: {name} {alias} already names {_v(after)} {revision}"
        if before is None:
            return f"{what} {name} {alias}: {_v(after)} (new alias) {revision}"
        if before == after:
            return f"{what} {name} {alias}: {_v(after)}, which was serving without a {alias} alias {revision}"
        return f"{what} {name} {alias}: {before} -> {after} {revision}"
    if action == "unalias":
        if not changed:
            return f"no change: {name} has no alias {alias} {revision}"
        said = f"deleted alias {alias} of {name} (it named {_v(before)}) {revision}"
        state = next((v["state"] for v in model.get("versions", ()) if v["version"] == before), None)
        if state in UNLOADED_STATES:
            said += (
                f"; {_v(before)} was unloaded with it: no alias, traffic weight, shadow or load kept it loaded "
                f"(`hotserve models load {name} {before}` keeps a version loaded)"
            )
        return said
    if action == "load":
        if not changed:
            return f"no change: {name} {_v(after)} is already kept loaded {revision}"
        return f"loaded {name} {_v(after)}: kept loaded, pinned requests reach it at /versions/{after} {revision}"
    if action == "unload":
        if not changed:
            return (
                f"no change: {name} {_v(before)} is not kept loaded by a load or as the previous "
                f"production: nothing to unload {revision}"
            )
        return f"unloaded {name} {_v(before)} {revision}"
    if action == "traffic":
        split = split_text(model)
        if not changed:
            return f"no change: {name} traffic already {split or 'all to production'} {revision}"
        if not split:
            return f"traffic cleared for {name}: every unpinned request goes to production {revision}"
        return f"traffic set for {name}: {split} {revision}"
    if action == "shadow":
        shadow = model.get("shadow")
        if not changed:
            state = "off" if shadow is None else shadow_text(shadow, _agreement(model))
            return f"no change: {name} shadow already {state} {revision}"
        if shadow is None:
            return f"shadow cleared for {name} (it was {_v(before)}) {revision}"
        return f"shadow set for {name}: {shadow_text(shadow, _agreement(model))} {revision}"
    if action == "capture":
        share = model.get("capture")
        if not changed:
            return f"no change: {name} already captures {_capture_share(share)} {revision}"
        if share is None:
            return f"capture of {name} back to each replica's default share (HOTSERVE_CAPTURE_SAMPLE) {revision}"
        if share == 0:
            return f"capture off for {name}: none of its answered requests are captured {revision}"
        return f"capture set for {name}: {_percent(share)} of its answered requests, on every replica {revision}"
    moved = f"{_text(before)} -> {_text(after)}"
    return f"{action} {name}: {moved} {revision}" if changed else f"no change: {name} ({moved}) {revision}"


def _agreement(model: dict[str, Any]) -> dict[str, Any] | None:
    agreement: dict[str, Any] | None = (model.get("routing") or {}).get("shadow_agreement")
    return agreement


def capture_text(doc: dict[str, Any]) -> str:
    """`GET /admin/models/{name}/capture`: the share this replica applies and where rows go."""
    name, override = doc["model"], doc["override"]
    if not doc["enabled"]:
        return (
            f"{name}: capture is off on this replica (no HOTSERVE_CAPTURE_SINK); "
            f"where a sink is set it captures {_capture_share(override)}"
        )
    default = f"the default is {_percent(doc['default'])}"
    whose = f"its own share; {default}" if override is not None else default
    return f"{name}: captures {_percent(doc['share'])} of its answered requests ({whose}) to {doc['sink']}"


def _capture_share(share: float | None) -> str:
    return "each replica's default share" if share is None else f"{_percent(share)} of its answered requests"


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


def split_text(model: dict[str, Any]) -> str:
    """`production=90, canary=10 (v2 90%, v4 10%)`: the policy, then the versions it routes to."""
    traffic = model.get("traffic") or {}
    if not traffic:
        return ""
    policy = ", ".join(f"{target}={weight}" for target, weight in traffic.items())
    weights = (model.get("routing") or {}).get("weights") or {}
    routed = ", ".join(f"v{version} {weight}%" for version, weight in weights.items())
    return f"{policy} ({routed})" if routed else policy


def shadow_text(shadow: dict[str, Any], agreement: dict[str, Any] | None = None) -> str:
    """The shadow policy, with the agreement rule this replica applies (`routing.shadow_agreement`),
    or, before its route exists, the rule the policy asks for."""
    if agreement is not None:
        rule = agreement["text"]
    elif shadow.get("threshold") is not None:
        rule = f"same decision at threshold {shadow['threshold']:g}"
    elif shadow.get("tolerance") is not None:
        rule = f"within {shadow['tolerance']:g}"
    else:
        rule = "by the models' task"
    return f"{_v(shadow['version'])} sees {shadow['share']:.0%} of unpinned requests, agreement: {rule}"


# --- tables ---------------------------------------------------------------------------------------


def history_table(entries: Sequence[dict[str, Any]]) -> str:
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
                e["result"] + (" (forced)" if e.get("forced") else ""),
                e.get("detail"),
            ]
            for e in entries
        ],
    )


def replicas_table(doc: dict[str, Any], now: float) -> str:
    return f"control revision {doc['revision']}\n" + table(
        ["REPLICA", "APPLIED REVISION", "REPORTED", "SPLIT (VERSION=PERCENT)", "FALLBACKS"],
        [
            [
                r["replica"],
                r["revision"],
                reported_text(r["reported_at"], now),
                "; ".join(
                    f"{m}: " + ", ".join(f"v{v}={w}" for v, w in sorted(ws.items()))
                    for m, ws in sorted(r["models"].items())
                ),
                "; ".join(r["fallbacks"]),
            ]
            for r in doc["replicas"]
        ],
    )


def reported_text(unix_s: float, now: float) -> str:
    """`2026-12-02 21:40:11 UTC (3 s ago)`."""
    at = datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{at} ({max(0.0, now - unix_s):.0f} s ago)"


def evidence_table(evidence: dict[str, Any]) -> str:
    candidate, production = evidence["candidate"], evidence.get("production") or {}
    return table(
        ["EVIDENCE", "VALUE"],
        [
            ["canary answers (5xx)", f"{candidate['requests']} ({candidate['errors']})"],
            ["p99 candidate / production", f"{_ms(candidate.get('p99_s'))} / {_ms(production.get('p99_s'))}"],
            ["p99 ratio", _ratio(evidence.get("p99_ratio"))],
            ["error ratio", _share(evidence.get("error_ratio"))],
            [
                "shadow compared (dropped, failed)",
                f"{evidence['shadow_compared']} ({evidence['shadow_dropped']}, {evidence['shadow_failed']})",
            ],
            ["shadow agreement", _share(evidence.get("shadow_agreement"))],
            ["observed", evidence["observed"]],
            ["window (both versions)", _window(evidence.get("since"), evidence.get("until"))],
        ],
    )


def _window(since: float | None, until: float | None) -> str:
    if since is None or until is None:
        return "-"  # a server from before the evidence recorder
    start, end = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) for t in (since, until))
    return f"{start} to {end} UTC"


def models_table(models: Sequence[dict[str, Any]]) -> str:
    """One row per version; SERVING marks the version unpinned requests go to by default
    (production), SPLIT its effective share under a traffic split. A version's load figures
    (LOADED AT, LOAD, MEMORY, PROVIDER) show while it holds memory, not after it was unloaded;
    the version serving without a `production` alias shows `(production)` as its alias, and a
    note under the table says why."""
    rows = []
    implicit = False
    for model in models:
        weights = model["routing"]["weights"] if model["traffic"] else {}
        for v in model["versions"]:
            share = weights.get(str(v["version"]))
            aliases = list(v["aliases"])
            if model["serving"] == v["version"] and "production" not in model.get("aliases", {}):
                aliases.append("(production)")
                implicit = True
            held = v["state"] not in UNLOADED_STATES
            rows.append(
                [
                    model["name"] + (" (unloaded)" if model["stopped"] else ""),
                    v["version"],
                    v["state"],
                    ",".join(aliases),
                    "*" if model["serving"] == v["version"] else "",
                    None if share is None else f"{share}%",
                    v["loaded_at"] if held else None,
                    _seconds(v["load_duration_s"]) if held else None,
                    _mib(v["memory_bytes"]) if held else None,
                    v["provider"] if held else None,
                    v["inflight"],
                    v["reason"],
                ]
            )
    note = (
        "\n(production): no production alias is set; the version serving since start-up (the newest then) takes "
        "unpinned requests until one is promoted (`hotserve models promote MODEL VERSION`)"
        if implicit
        else ""
    )
    return (
        table(
            [
                "MODEL",
                "VERSION",
                "STATE",
                "ALIASES",
                "SERVING",
                "SPLIT",
                "LOADED AT",
                "LOAD",
                "MEMORY",
                "PROVIDER",
                "IN-FLIGHT",
                "REASON",
            ],
            rows,
        )
        + note
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


def _v(version: Any) -> str:
    return "-" if version is None else f"v{version}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _share(value: float | None) -> str:
    """A share as a percentage, never rounded up to 100% or down to 0% when it is not."""
    if value is None:
        return "-"
    text = f"{value:.2%}"
    if (text == "100.00%" and value < 1.0) or (text == "0.00%" and value > 0.0):
        return f"{value:.6%}"
    return text


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}s"


def _mib(value: int | None) -> str | None:
    return None if value is None else f"{value / 2**20:.1f} MiB"
