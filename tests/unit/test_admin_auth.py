"""Admin tokens: where they come from, what is refused at start, how a header is checked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.api.admin_auth import AdminTokens, AdminTokensInvalid
from server.errors import Forbidden, Unauthorized
from server.registry.audit import AuditEntry, FileAuditLog, parse_time
from server.settings import Settings

A = "a" * 20
B = "b" * 20


def tokens(**settings: object) -> AdminTokens | None:
    return AdminTokens.from_settings(Settings(**settings))  # type: ignore[arg-type]


def test_no_token_configured_means_admin_api_off() -> None:
    assert tokens() is None
    assert tokens(admin_tokens=" , ", admin_token="  ") is None


def test_named_tokens_from_env_and_file_and_the_unnamed_one(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# operators\nbob:{B}\n\n")
    found = tokens(admin_tokens=f"alice:{A}", admin_tokens_file=path, admin_token="c" * 20)
    assert found is not None and found.names == ["admin", "alice", "bob"]
    assert found.identify(f"Bearer {A}") == "alice"
    assert found.identify(f"bearer  {B} ") == "bob"
    assert found.identify("Bearer " + "c" * 20) == "admin"


def test_headers_without_a_bearer_token_are_401_and_unknown_tokens_403() -> None:
    found = tokens(admin_tokens=f"alice:{A}")
    assert found is not None
    for header in [None, "", "Bearer", "Bearer   ", f"Basic {A}", A]:
        with pytest.raises(Unauthorized):
            found.identify(header)
    for header in [f"Bearer {A}x", f"Bearer {A[:-1]}", "Bearer " + B]:
        with pytest.raises(Forbidden):
            found.identify(header)


@pytest.mark.parametrize(
    "configured, message",
    [
        ({"admin_tokens": "alice"}, "HOTSERVE_ADMIN_TOKENS entry 1: expected `name:token`"),
        ({"admin_tokens": f"alice:{A},alice:{B}"}, "token name 'alice' is used twice"),
        ({"admin_tokens": f"alice:{A},bob:{A}"}, "'bob' has the same token as 'alice'"),
        ({"admin_tokens": "alice:changeme"}, "is a placeholder or shorter than 16"),
        ({"admin_tokens": f"al ice:{A}"}, "a token name must be letters"),
        ({"admin_token": "short"}, "HOTSERVE_ADMIN_TOKEN: the token of 'admin' is a placeholder"),
    ],
)
def test_unusable_tokens_stop_the_start_without_showing_any_token(configured: dict[str, str], message: str) -> None:
    with pytest.raises(AdminTokensInvalid, match=message) as error:
        tokens(**configured)
    assert A not in str(error.value) and B not in str(error.value) and "changeme" not in str(error.value)


def test_an_unreadable_tokens_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AdminTokensInvalid, match="admin tokens file .*absent cannot be read"):
        tokens(admin_tokens_file=tmp_path / "absent")


def test_secrets_never_show_in_the_settings_repr() -> None:
    assert A not in repr(Settings(admin_tokens=f"alice:{A}", admin_token=B))


async def test_audit_log_appends_durably_and_filters(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "state" / "audit.jsonl")
    assert await log.read() == []
    first = AuditEntry.model_validate(
        {
            "who": "alice",
            "action": "alias",
            "model": "m",
            "alias": "production",
            "from": 1,
            "to": 2,
            "result": "ok",
            "revision": 4,
            "at": "2026-11-24T13:00:00+00:00",
        }
    )
    second = AuditEntry(
        who="ci", action="load", model="n", result="refused", detail="why", at="2026-11-24T15:00:00+00:00"
    )
    await log.append(first)
    await log.append(second)
    with (tmp_path / "state" / "audit.jsonl").open("ab") as fh:
        fh.write(b'{"who": "torn')  # a crash mid-append
    assert await log.read() == [first, second]
    assert await log.read(model="m") == [first]
    assert await log.read(alias="production", until=parse_time("2026-11-24T14:00:00")) == [first]
    assert await log.read(since=datetime(2026, 11, 24, 14, tzinfo=UTC)) == [second]
    assert await log.read(limit=1) == [second]
    line = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()[0]
    assert '"from":1,"to":2' in line and '"forced":false' in line
