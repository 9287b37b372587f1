"""Admin bearer tokens: who is calling the control path (the first check of every admin route).

Tokens come from `HOTSERVE_ADMIN_TOKENS` (`name:token,name:token`), a file of `name:token`
lines (`HOTSERVE_ADMIN_TOKENS_FILE`), and `HOTSERVE_ADMIN_TOKEN` (one token, named `admin`).
None configured: the admin API is off. Only SHA-256 digests are kept; every presented token
is compared with all of them in constant time (no early exit, equal lengths), and no message
here ever contains a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from server.errors import Forbidden, Unauthorized
from server.settings import Settings

UNNAMED = "admin"
"""Audit name of `HOTSERVE_ADMIN_TOKEN`."""
MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_PLACEHOLDERS = {
    "changeme",
    "change-me",
    "changethis",
    "secret",
    "password",
    "token",
    "admin",
    "example",
    "xxxxxxxxxxxxxxxx",
}


class AdminTokensInvalid(ValueError):
    """The configured admin tokens cannot be used (the message never shows a token)."""


@dataclass(frozen=True, slots=True)
class AdminTokens:
    """Token names and the digests of their tokens."""

    _digests: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminTokens | None:
        """The configured tokens; None when there are none (admin API off)."""
        entries: list[tuple[str, str, str]] = []
        if settings.admin_tokens is not None:
            for number, item in enumerate(settings.admin_tokens.get_secret_value().split(","), 1):
                if item.strip():
                    entries.append(
                        (
                            *_split(item, f"HOTSERVE_ADMIN_TOKENS entry {number}"),
                            f"HOTSERVE_ADMIN_TOKENS entry {number}",
                        )
                    )
        if settings.admin_tokens_file is not None:
            entries += _read_file(settings.admin_tokens_file)
        if settings.admin_token is not None and settings.admin_token.get_secret_value().strip():
            entries.append((UNNAMED, settings.admin_token.get_secret_value().strip(), "HOTSERVE_ADMIN_TOKEN"))
        if not entries:
            return None
        names: set[str] = set()
        digests: dict[bytes, str] = {}
        for name, token, where in entries:
            if name in names:
                raise AdminTokensInvalid(f"{where}: token name {name!r} is used twice")
            if len(token) < MIN_TOKEN_LENGTH or token.lower() in _PLACEHOLDERS:
                raise AdminTokensInvalid(
                    f"{where}: the token of {name!r} is a placeholder or shorter than {MIN_TOKEN_LENGTH} characters"
                )
            digest = _digest(token)
            if digest in digests:
                raise AdminTokensInvalid(
                    f"{where}: {name!r} has the same token as "
                    f"{digests[digest]!r}; the audit log could not tell them apart"
                )
            names.add(name)
            digests[digest] = name
        return cls(tuple((name, digest) for digest, name in digests.items()))

    @property
    def names(self) -> list[str]:
        return sorted(name for name, _ in self._digests)

    def identify(self, authorization: str | None) -> str:
        """The name of the token in an `Authorization` header value.

        Unauthorized (401) when the header is missing or not `Bearer <token>`; Forbidden (403)
        when the token is not one of ours.
        """
        if not authorization:
            raise Unauthorized("admin API: missing `Authorization: Bearer <token>` header")
        scheme, _, credentials = authorization.strip().partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("admin API: the Authorization header must be `Bearer <token>`")
        presented = _digest(token)
        found = None
        for name, digest in self._digests:  # all of them, whatever matched: constant time
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        if found is None:
            raise Forbidden("admin API: this token is not accepted")
        return found


def _split(item: str, where: str) -> tuple[str, str]:
    name, sep, token = item.strip().partition(":")
    name, token = name.strip(), token.strip()
    if not sep or not token:
        raise AdminTokensInvalid(f"{where}: expected `name:token`")
    if not _NAME.fullmatch(name):
        # The name is not echoed: a mangled entry may have the token where the name belongs.
        raise AdminTokensInvalid(f"{where}: a token name must be letters, digits and _.@- (at most 64)")
    return name, token


def _read_file(path: Path) -> list[tuple[str, str, str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise AdminTokensInvalid(f"admin tokens file {path} cannot be read: {type(error).__name__}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            where = f"{path} line {number}"
            entries.append((*_split(line, where), where))
    return entries


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
