"""A real S3-compatible server for tests: `moto_server` (moto[server], a dev dependency) on a free port.

Started per test module; `stop()` and `start()` again on the same port simulate an object store
going down and coming back (moto keeps its buckets in memory: a restarted one has none, so it
first refuses, as a store that lost a bucket or a permission would).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx

START_GUARD_S = 60.0
ACCESS = {
    "AWS_ACCESS_KEY_ID": "capture-test",
    "AWS_SECRET_ACCESS_KEY": "capture-test-secret",
    "AWS_REGION": "us-east-1",
}
"""Credentials moto accepts (any); tests put them in the environment the sink reads."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """`moto_server` on 127.0.0.1:`port`, logging to `log_path`."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        give_up = time.monotonic() + START_GUARD_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log_path.read_text()[-2000:]}")
            try:
                httpx.get(self.endpoint + "/", timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > give_up:
                    raise RuntimeError("moto_server did not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def client(self) -> Any:
        """A boto3 S3 client of this server (boto3 is untyped)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=ACCESS["AWS_REGION"],
            aws_access_key_id=ACCESS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=ACCESS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))
