"""A real `redis-server` of a test's own on a free 127.0.0.1 port (no persistence), for tests
that stop and restart it; stopped by its own PID."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

import redis

from load_tests.server_process import free_port

STARTUP_TIMEOUT_S = 10.0


@dataclass
class RedisProcess:
    port: int
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisProcess:
        """Start (or restart, on the same port) and return once it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def start_redis() -> RedisProcess:
    return RedisProcess(free_port()).start()
