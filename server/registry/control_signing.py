"""Signing of the shared control document (control path): who may change production through Redis.

The one signing code path of the fleet: release records and the replicas' release evidence
(`server/release/store.py`) are signed and verified with the same key and this same HMAC.

Anyone who can write to Redis could otherwise rewrite the routing with no token and no audit
entry. With a key (`HOTSERVE_CONTROL_SIGNING_KEY`, or `HOTSERVE_CONTROL_SIGNING_KEY_FILE` for a
mounted Secret; never a flag) every document a replica writes carries an HMAC-SHA256 of its bytes
and of the Redis key it is stored under (a signed document copied to another key or fleet does
not verify), and a replica applies only documents that verify. Without a key documents are
written and read unsigned: fine for one server with a local control file, never for a fleet
(the Helm chart always sets one); `hotserve_control_signing_enabled` says which mode runs.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from server.errors import ControlStateUnavailable
from server.settings import Settings

MIN_KEY_BYTES = 32


class ControlSigningKeyInvalid(ValueError):
    """The configured signing key cannot be used (the message never shows the key)."""


class ControlSignatureInvalid(ControlStateUnavailable):
    """A stored document whose signature does not verify: it is not applied (503 to an admin
    change; a starting replica waits, as for a store that does not answer). The control document
    by default; release records and release evidence (`server/release/store.py`) say what they are."""

    def __init__(
        self,
        where: str,
        revision: int | None,
        reason: str,
        what: str = "control state",
        consequence: str = "not applied, keeping the last good routing",
        unit: str = "revision",
    ) -> None:
        shown = "a document" if revision is None else f"{unit} {revision}"
        super().__init__(f"{what} {where}: {shown} {reason}; {consequence}")
        self.revision = revision


@dataclass(frozen=True, slots=True)
class ControlSigner:
    """Signs and verifies control documents; with no key, signs nothing and accepts everything."""

    _key: bytes | None = None

    @property
    def signing(self) -> bool:
        return self._key is not None

    def sign(self, where: str, doc: bytes) -> str:
        """Hex HMAC-SHA256 of `doc` stored under `where`; "" when unsigned."""
        if self._key is None:
            return ""
        return hmac.new(self._key, where.encode() + b"\n" + doc, hashlib.sha256).hexdigest()

    def check(self, where: str, doc: bytes, signature: str | None) -> str | None:
        """None when `doc` may be applied; else why not (missing or wrong signature)."""
        if self._key is None:
            return None
        if not signature:
            return "carries no signature"
        if not hmac.compare_digest(self.sign(where, doc), signature):
            return "has a signature that does not verify (written without the fleet's key, or altered)"
        return None


def signer_for(settings: Settings) -> ControlSigner:
    """The signer of the configured key; an unsigned one when no key is configured."""
    key: str | None = None
    if settings.control_signing_key is not None:
        key = settings.control_signing_key.get_secret_value()
    elif settings.control_signing_key_file is not None:
        path = settings.control_signing_key_file
        try:
            key = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ControlSigningKeyInvalid(
                f"control signing key file {path} cannot be read: {type(error).__name__}"
            ) from None
    if key is None:
        return ControlSigner()
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ControlSigningKeyInvalid(
            f"the control signing key must be at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        )
    return ControlSigner(key.encode())
