"""URLs as they may be shown in logs, answers, error messages and lineage: without secrets.

One definition for every URL hotserve shows: Redis (features, control state) and MLflow's
tracking server (recorded in a version's lineage).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

SECRET_QUERY_WORDS = ("password", "passwd", "pwd", "secret", "token", "key")
"""A query parameter whose name contains one of these has its value hidden."""
HIDDEN = "***"


def redacted(url: str) -> str:
    """`url` without secrets: the password of the user-info part and credential-like query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{HIDDEN}@{host}" if has_password else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(name, HIDDEN if any(w in name.lower() for w in SECRET_QUERY_WORDS) else value) for name, value in pairs],
            safe="*",
        )
    # By hand: urlunsplit drops the empty authority of `unix:///path`.
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
