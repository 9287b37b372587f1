"""The model's control state as a load run found it, and putting it back: outside locust (set-up
and clean-up of `python -m load_tests run`), so nothing here imports it.

The operator (`operator.py`) names its candidate `canary`, sets a traffic split and a shadow,
then removes them. A model that already has any of them is refused before the run, since they
are someone else's, and so is one without a `production` alias (promote + rollback would leave
one, and it cannot be deleted); after the run whatever a cycle cut short is undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.admin_client import AdminClient
from server.contract.aliases import CANARY, PRODUCTION


class ModelStateError(Exception):
    """The admin API did not answer the model's state."""


def admin_request(
    host: str, token: str, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 60.0
) -> tuple[int, dict[str, Any]]:
    """One admin call outside locust (set-up and clean-up): (status, JSON answer; {} without one)."""
    status, doc = AdminClient(host, token, timeout_s).request(method, path, body)
    return status, doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class FoundState:
    """A model's control state before the run: what the operator must leave as it found it."""

    model: str
    production: int | None
    aliases: dict[str, int]
    traffic: dict[str, int]
    shadow: dict[str, Any] | None

    def in_the_way(self) -> str | None:
        """Why the operator cannot run on this model (it names its candidate `canary`, sets a split
        and a shadow, then removes them), or None."""
        found = []
        if CANARY in self.aliases:
            found.append(f"alias {CANARY} -> v{self.aliases[CANARY]}")
        if self.traffic:
            found.append("a traffic split (" + ", ".join(f"{t}={w}" for t, w in self.traffic.items()) + ")")
        if self.shadow:
            found.append(f"a shadow (v{self.shadow.get('version')})")
        m = self.model
        if self.production is None and not found:
            # promote + rollback end on a `production` alias, which the admin API cannot delete
            return (
                f"model {m!r} has no production alias (it serves its newest version): the operator's promote "
                f"and rollback would leave one. Name it first (hotserve models promote {m} VERSION), or run "
                f"with --no-operator"
            )
        if not found:
            return None
        return (
            f"model {m!r} already has {' and '.join(found)}: the operator would overwrite and then remove "
            f"them. Run with --no-operator, or clear them first (hotserve models unalias {m} {CANARY}; "
            f"hotserve models traffic {m} --clear; hotserve models shadow {m} --off)"
        )


def found_state(host: str, token: str, model: str) -> FoundState:
    status, doc = admin_request(host, token, "GET", f"/admin/models/{model}")
    if status != 200:
        raise ModelStateError(f"GET /admin/models/{model}: {status} {doc}")
    aliases = {str(k): int(v) for k, v in (doc.get("aliases") or {}).items()}
    return FoundState(
        model=model,
        production=aliases.get(PRODUCTION),
        aliases=aliases,
        traffic=dict(doc.get("traffic") or {}),
        shadow=doc.get("shadow"),
    )


def restore(host: str, token: str, found: FoundState) -> list[str]:
    """Undo what a cycle cut short left behind, back to `found` (which had no canary, split or
    shadow: `in_the_way`). Returns what it had to change (empty when the run ended between cycles)."""
    undone = []
    base = f"/admin/models/{found.model}"
    _, doc = admin_request(host, token, "GET", base)
    for what in ("traffic", "shadow"):
        if doc.get(what):
            status, _ = admin_request(host, token, "DELETE", f"{base}/{what}")
            if status == 200:
                undone.append(f"cleared {what}")
    if CANARY in doc.get("aliases", {}) and CANARY not in found.aliases:
        admin_request(host, token, "DELETE", f"{base}/aliases/{CANARY}")
        undone.append(f"dropped {CANARY}")
    if found.production is not None and doc.get("aliases", {}).get(PRODUCTION) != found.production:
        admin_request(host, token, "PUT", f"{base}/aliases/{PRODUCTION}", {"version": found.production})
        undone.append(f"production back to {found.production}")
    return undone
