"""A real server on a Redis that needs a user, a password and TLS: the password comes from a file,
and no answer or log line shows it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from load_tests.server_process import free_port, start_server
from onnx_models import write_tabular

pytestmark = pytest.mark.integration

PASSWORD = "redis-acl-password-do-not-leak"
TOKEN = "credentials-token-0123456"
HANG_GUARD_S = 30.0


@dataclass
class SecuredRedis:
    port: int
    ca_file: Path

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username="hotserve",
            password=PASSWORD,
            ssl=True,
            ssl_ca_certs=str(self.ca_file),
            socket_timeout=5,
        )


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[SecuredRedis]:
    """redis-server with TLS only (no plain port), the default user off and an ACL user `hotserve`."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(tmp_path), "--tls-auth-clients", "no"]
        + ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
        + ["--user", "default", "off", "--user", "hotserve", "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    secured = SecuredRedis(port, cert)
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        try:
            with secured.client() as client:
                if client.ping():
                    break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, "redis-server with TLS did not start"
            time.sleep(0.05)
    yield secured
    process.terminate()
    process.wait(timeout=HANG_GUARD_S)


def test_a_server_reaches_a_tls_redis_with_an_acl_user_and_a_password_from_a_file(
    secured_redis: SecuredRedis, tmp_path: Path
) -> None:
    write_tabular(tmp_path / "repository", 1)
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD + "\n")
    env = {
        "HOTSERVE_REDIS_URL": f"rediss://hotserve@127.0.0.1:{secured_redis.port}/0",
        "HOTSERVE_REDIS_PASSWORD_FILE": str(password_file),
        "HOTSERVE_REDIS_TLS_CA_FILE": str(secured_redis.ca_file),
        "HOTSERVE_REDIS_TIMEOUT_MS": "2000",
        "HOTSERVE_CONTROL_SIGNING_KEY": "credentials-signing-key-" + "0" * 32,
        "HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}",
        "HOTSERVE_AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl"),
        "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
    }
    with start_server(tmp_path / "repository", tmp_path / "server.log", env=env) as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        changed = httpx.put(
            server.base_url + "/admin/models/tab/aliases/production", json={"version": 1}, headers=headers
        )
        assert changed.status_code == 200, changed.text
        with secured_redis.client() as client:
            assert client.hget("hotserve:control", "revision") == b"1"  # the routing went through TLS + ACL
        views = httpx.get(server.base_url + "/admin/features/views", headers=headers).json()
        assert views["store"] == f"redis at rediss://hotserve@127.0.0.1:{secured_redis.port}/0"
        log = server.log()
    assert PASSWORD not in log and PASSWORD not in str(views)


def test_a_password_in_the_url_query_never_shows(secured_redis: SecuredRedis, tmp_path: Path) -> None:
    write_tabular(tmp_path / "repository", 1)
    url = f"rediss://hotserve@127.0.0.1:{secured_redis.port}/0?password={PASSWORD}"
    env = {
        "HOTSERVE_REDIS_URL": url,
        "HOTSERVE_REDIS_TLS_CA_FILE": str(secured_redis.ca_file),
        "HOTSERVE_REDIS_TIMEOUT_MS": "2000",
        "HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}",
        "HOTSERVE_AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl"),
        "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
    }
    with start_server(tmp_path / "repository", tmp_path / "server.log", env=env) as server:
        views = httpx.get(server.base_url + "/admin/features/views", headers={"Authorization": f"Bearer {TOKEN}"})
        assert views.json()["store"].endswith("/0?password=***")
        log = server.log()
    assert "password=***" in log  # the unsigned-mode warning names the Redis, redacted
    assert PASSWORD not in log and PASSWORD not in views.text
