"""Refused stored documents (control path): what did not verify is counted, logged and audited.

Everything in Redis that can change what serves is signed with the fleet's key: the control
document, release records and the replicas' release evidence. A replica that reads one that does
not verify (or a release record whose step does not follow from the last one it saw) applies
nothing of it and reports it here, once per distinct document: `hotserve_control_document_rejected_total`
by `document` (`HotserveControlDocumentRejected` fires on it), `hotserve_control_document_verified`
at 0 while any such document is still read, one ERROR log line and one audit entry
(`result: refused`, `who: replica:<id>`: the replica that refused it, never a name the document
claims). Whoever can write to Redis can write a new document every millisecond, so the audit
entries and log lines of a kind are rate limited (`AUDIT_BURST` per `AUDIT_WINDOW_S`; the next
entry says how many were left out) and what was refused is remembered for the last
`REMEMBERED` documents only: the counter still counts each one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal, Protocol

from server.metrics.instruments import SIGNED_DOCUMENTS, Metrics
from server.registry.audit import AuditEntry, AuditLog

log = logging.getLogger(__name__)

Document = Literal["control", "release", "evidence"]
"""One of `SIGNED_DOCUMENTS`."""
AUDIT_BURST = 5
AUDIT_WINDOW_S = 600.0
REMEMBERED = 1024


def fingerprint(*parts: bytes | str | None) -> str:
    """A short digest naming one stored document (its bytes and signature), for deduplication."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(b"\x00" if part is None else (part if isinstance(part, bytes) else part.encode()))
        digest.update(b"\x1f")
    return digest.hexdigest()[:16]


class Refusals(Protocol):
    async def refused(
        self,
        document: Document,
        where: str,
        print_: str,
        message: str,
        model: str | None = None,
        revision: int | None = None,
    ) -> None:
        """`where` (a Redis key) held a document (`print_`: its fingerprint) that is not applied;
        `message` says why, naming `where`."""
        ...

    def verified(self, document: Document, where: str) -> None:
        """`where` holds a document that verifies (again)."""
        ...


class RecordedRefusals:
    """Metrics, log lines and (rate-limited) audit entries of refused documents."""

    def __init__(
        self,
        metrics: Metrics,
        audit: AuditLog | None,
        replica: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._audit = audit
        self._replica = replica
        self._clock = clock
        self._seen: OrderedDict[tuple[Document, str], str] = OrderedDict()
        """(document, where) -> fingerprint of the refused document last read there."""
        self._entries: dict[str, deque[float]] = {d: deque() for d in SIGNED_DOCUMENTS}
        self._left_out: dict[str, int] = dict.fromkeys(SIGNED_DOCUMENTS, 0)

    async def refused(
        self,
        document: Document,
        where: str,
        print_: str,
        message: str,
        model: str | None = None,
        revision: int | None = None,
    ) -> None:
        key = (document, where)
        if self._seen.get(key) == print_:
            self._seen.move_to_end(key)
            return  # reported when first read
        self._seen[key] = print_
        self._seen.move_to_end(key)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        self._metrics.control_document_rejected.labels(document).inc()
        self._metrics.control_document_verified.labels(document).set(0)
        if not self._may_record(document):
            return
        left_out, self._left_out[document] = self._left_out[document], 0
        detail = message if not left_out else f"{message} ({left_out} more refused {document} documents not logged)"
        log.error("%s", detail)
        if self._audit is None:
            return
        entry = AuditEntry.model_validate(
            {
                "who": f"replica:{self._replica}",
                "action": document,
                "model": model,
                "result": "refused",
                "revision": revision,
                "detail": detail,
            }
        )
        try:
            await self._audit.append(entry)
        except OSError as error:  # refused either way; the log line above says so
            log.error("the audit log cannot record the refusal (%s)", error.strerror or error)

    def verified(self, document: Document, where: str) -> None:
        self._seen.pop((document, where), None)
        if not any(d == document for d, _ in self._seen):
            self._metrics.control_document_verified.labels(document).set(1)

    def _may_record(self, document: Document) -> bool:
        """Whether the audit log and the log get this refusal (AUDIT_BURST per AUDIT_WINDOW_S)."""
        now = self._clock()
        recent = self._entries[document]
        while recent and recent[0] <= now - AUDIT_WINDOW_S:
            recent.popleft()
        if len(recent) >= AUDIT_BURST:
            self._left_out[document] += 1
            return False
        recent.append(now)
        return True
