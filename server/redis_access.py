"""How the server reaches Redis (features and control state): the URL, the password from a
mounted file, TLS, and the URL as it may be shown in logs, answers and error messages.

`HOTSERVE_REDIS_URL` may carry credentials (`redis://user:password@host`, `?password=`); the
password may instead come from `HOTSERVE_REDIS_PASSWORD_FILE` (a mounted Secret), so it sits in
neither a ConfigMap nor the environment. `rediss://` turns on TLS, checked against
`HOTSERVE_REDIS_TLS_CA_FILE` when set (else the system's CAs). Anything shown goes through
`redacted()`: user-info passwords and credential-like query parameters become `***`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.redaction import HIDDEN, redacted
from server.settings import Settings

__all__ = ["HIDDEN", "RedisAccess", "RedisAccessInvalid", "feast_redis_access_for", "redacted", "redis_access_for"]


class RedisAccessInvalid(ValueError):
    """The Redis credentials cannot be used (the message never shows a secret)."""


@dataclass(frozen=True, slots=True)
class RedisAccess:
    """One Redis to connect to: URL plus the options that do not belong in it."""

    url: str
    password: str | None = None
    """From `HOTSERVE_REDIS_PASSWORD_FILE`; a password in the URL wins over it (redis-py's rule)."""
    tls_ca_file: Path | None = None

    @classmethod
    def from_values(cls, url: str, password_file: Path | None = None, tls_ca_file: Path | None = None) -> RedisAccess:
        password = None
        if password_file is not None:
            try:
                password = password_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                raise RedisAccessInvalid(
                    f"Redis password file {password_file} cannot be read: {type(error).__name__}"
                ) from None
            if not password:
                raise RedisAccessInvalid(f"Redis password file {password_file} is empty")
        if tls_ca_file is not None and not url.startswith("rediss://"):
            raise RedisAccessInvalid("HOTSERVE_REDIS_TLS_CA_FILE needs a rediss:// URL (TLS)")
        return cls(url, password, tls_ca_file)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for `redis.Redis.from_url(self.url, ...)`."""
        options: dict[str, Any] = {}
        if self.password is not None:
            options["password"] = self.password
        if self.tls_ca_file is not None:
            options["ssl_ca_certs"] = str(self.tls_ca_file)
        return options

    @property
    def shown(self) -> str:
        """The URL as logs and answers may show it."""
        return redacted(self.url)


def redis_access_for(settings: Settings) -> RedisAccess | None:
    """The configured Redis (`HOTSERVE_REDIS_URL` + password file + CA), or None without one."""
    if settings.redis_url is None:
        return None
    return RedisAccess.from_values(
        settings.redis_url.get_secret_value(), settings.redis_password_file, settings.redis_tls_ca_file
    )


def feast_redis_access_for(settings: Settings) -> RedisAccess | None:
    """The Redis of Feast's online store: `HOTSERVE_FEAST_REDIS_URL` (its credentials in the URL,
    TLS with `rediss://` against the system's CAs), else the configured Redis; None without either."""
    if settings.feast_redis_url is None:
        return redis_access_for(settings)
    return RedisAccess.from_values(settings.feast_redis_url.get_secret_value())
