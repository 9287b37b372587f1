"""`Captured`: one answered request as the capture tap hands it to the writer (references only).

Built on the event loop once a sampled request is answered: it holds the request's own input
and output tensors (no copy, no conversion) and, when a shadow copy was sent, a slot its answer
fills in later (`shadow_done`, a done callback on the loop). The writer thread turns batches of
these into Arrow columns (`layout.py`), and the served index takes its rows from them.
"""

from __future__ import annotations

import asyncio

from server.contract.manifest import ModelManifest
from server.request import Tensors

NO_SHADOW = 0
SHADOW_PENDING = 1
SHADOW_ENDED = 2
"""`Captured.shadow_state`: no copy sent; a copy on its way; the copy ended (answered or not)."""


class Captured:
    """One sampled answered request (mutable only through `shadow_done`)."""

    __slots__ = (
        "request_id",
        "ts",
        "manifest",
        "protocol",
        "inputs",
        "outputs",
        "rows",
        "nbytes",
        "shadow_state",
        "shadow_version",
        "shadow_outputs",
    )

    def __init__(
        self,
        request_id: str,
        ts: float,
        manifest: ModelManifest,
        protocol: str,
        inputs: Tensors,
        outputs: Tensors,
        rows: int,
        nbytes: int,
    ) -> None:
        self.request_id = request_id
        self.ts = ts
        """Unix time of the answer."""
        self.manifest = manifest
        """The answering version's manifest: its name, version and signature (the columns)."""
        self.protocol = protocol
        self.inputs = inputs
        self.outputs = outputs
        self.rows = rows
        self.nbytes = nbytes
        """What the buffer bound counts for it (its tensors' bytes and a fixed overhead)."""
        self.shadow_state = NO_SHADOW
        self.shadow_version: int | None = None
        self.shadow_outputs: Tensors | None = None

    @property
    def model(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def shadow_sent(self, version: int) -> None:
        self.shadow_version = version
        self.shadow_state = SHADOW_PENDING

    def shadow_done(self, done: asyncio.Future[Tensors] | asyncio.Future[Tensors | None]) -> None:
        """The copy ended: keep its outputs if it answered. Outputs are set before the state, so
        the writer thread that reads the state first never sees an answer without its outputs."""
        if not done.cancelled() and done.exception() is None:
            outputs = done.result()
            if outputs is not None:
                self.shadow_outputs = outputs
        self.shadow_state = SHADOW_ENDED
