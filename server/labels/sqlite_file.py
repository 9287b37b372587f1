"""`SqliteFile`: the embedded label stores' SQLite file, opened on first use.

Two connections share the file (the served index on capture's writer thread, the pairs on label
intake), so a writing transaction starts with `BEGIN IMMEDIATE`: a deferred one that reads and
then writes cannot wait for the other's lock (SQLite answers "database is locked" at once rather
than deadlock), while an immediate one waits up to the connection's timeout.

A server whose capture is off and that takes no labels never creates the file, nor its folder
(which is the control state's when capture writes elsewhere: a read-only mount must not fail the
start). A folder that cannot be made surfaces as `sqlite3.OperationalError`, the error the stores
already turn into a count or a 503.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

BUSY_TIMEOUT_S = 10.0
"""How long a write waits for the other connection's transaction before it is refused."""


class SqliteFile:
    """Not thread-safe on its own: its owner opens and uses it under its own lock."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._schema = schema
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise sqlite3.OperationalError(f"cannot make {self.path.parent}: {error}") from None
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(self._schema)
            self._db = db
        return self._db

    def rollback(self) -> None:
        """After a failed statement: end the open transaction, if the file was opened at all."""
        if self._db is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
