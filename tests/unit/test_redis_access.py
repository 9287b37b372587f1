"""What the server shows of a Redis URL, and the credentials it connects with."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.redis_access import RedisAccess, RedisAccessInvalid, feast_redis_access_for, redacted, redis_access_for
from server.settings import Settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:pw@h:1/2", "redis://user:***@h:1/2"),
        ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
        ("rediss://hotserve@h:6380/0", "rediss://hotserve@h:6380/0"),
        ("redis://h:1/0?password=pw&socket_timeout=1", "redis://h:1/0?password=***&socket_timeout=1"),
        ("redis://h:1/0?ssl_password=pw&username=u", "redis://h:1/0?ssl_password=***&username=u"),
        ("redis://u:p%40ss@h:1/0?Password=x", "redis://u:***@h:1/0?Password=***"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_redaction_hides_user_info_passwords_and_credential_query_parameters(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert "pw" not in redacted(url) and "p%40ss" not in redacted(url)


def test_the_password_comes_from_a_file_and_never_into_what_is_shown(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret-from-a-Secret\n")
    access = redis_access_for(
        Settings(redis_url="rediss://hotserve@redis:6380/0", redis_password_file=secret, redis_tls_ca_file=secret)
    )
    assert access is not None
    assert access.client_options() == {"password": "s3cret-from-a-Secret", "ssl_ca_certs": str(secret)}
    assert access.shown == "rediss://hotserve@redis:6380/0"
    assert "s3cret" not in repr(access.shown)


def test_unusable_redis_credentials_are_refused_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(RedisAccessInvalid, match="redis-password cannot be read: FileNotFoundError"):
        RedisAccess.from_values("redis://h:1/0", tmp_path / "redis-password")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(RedisAccessInvalid, match="is empty"):
        RedisAccess.from_values("redis://h:1/0", tmp_path / "empty")
    with pytest.raises(RedisAccessInvalid, match="needs a rediss:// URL"):
        RedisAccess.from_values("redis://h:1/0", tls_ca_file=tmp_path / "ca.pem")


def test_feast_reads_the_configured_redis_with_its_password_file_unless_it_has_its_own_url(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret-from-a-Secret\n")
    shared = feast_redis_access_for(Settings(redis_url="redis://hotserve@redis:6379/0", redis_password_file=secret))
    assert shared is not None
    assert shared.client_options() == {"password": "s3cret-from-a-Secret"}
    own = feast_redis_access_for(
        Settings(
            redis_url="redis://hotserve@redis:6379/0",
            redis_password_file=secret,
            feast_redis_url="redis://:feast-pw@feast-redis:6379/1",
        )
    )
    assert own is not None
    assert own.url == "redis://:feast-pw@feast-redis:6379/1"
    assert own.client_options() == {}  # the password file is the other Redis's
    assert own.shown == "redis://:***@feast-redis:6379/1"
    assert feast_redis_access_for(Settings()) is None
