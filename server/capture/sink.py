"""Where capture (and label) files go: a local directory or S3-compatible object storage.

A `Sink` takes one finished file at a time (`put(path, data)`, the path relative to the sink's
root) and makes it appear whole or not at all, so a reader listing the sink never sees half a
file: on a local disk the bytes go to a hidden temporary name in the target directory (`.` names
are skipped by pyarrow.dataset, and do not match `*.parquet`), are fsynced and renamed into
place; on object storage a finished object is one PUT (a multipart upload, for a large file, is
invisible until completed). Only the capture writer's thread calls `put`: it blocks.

`open_sink(url, endpoint)` picks one from the `capture_sink` setting: a path, or
`s3://bucket/prefix` with `capture_s3_endpoint` for an S3-compatible server (MinIO, Ceph,
moto). Credentials are never settings: pyarrow's S3 client reads the standard chain
(`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` in the environment, which the
Helm chart fills from a Secret; `~/.aws`; instance metadata); they are never logged.
`filesystem_for(url, endpoint)` gives readers (retraining) the same pyarrow filesystem and root.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

S3_CONNECT_TIMEOUT_S = 5.0
S3_REQUEST_TIMEOUT_S = 30.0


class SinkError(Exception):
    """A file could not be stored (the sink is down, full, refusing or unwritable)."""


class Sink(Protocol):
    """A place finished files are put, whole or not at all."""

    kind: str
    """`local` or `s3` (the `sink` label of the capture metrics)."""

    def put(self, path: str, data: pa.Buffer | bytes) -> None:
        """Store `data` at `path` (relative to the root, `/`-separated); raises SinkError."""
        ...

    def describe(self) -> str:
        """Where files go, for logs (no credentials)."""
        ...


class LocalSink:
    """Files under a local directory, each written to a hidden temporary name and renamed."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, path: str, data: pa.Buffer | bytes) -> None:
        target = self.root / path
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(memoryview(data))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a power cut
            finally:
                os.close(directory)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise SinkError(f"{target}: {error.strerror or error}") from error

    def describe(self) -> str:
        return str(self.root)


class S3Sink:
    """Objects under `s3://bucket/prefix`; each file one finished upload."""

    kind = "s3"

    def __init__(self, filesystem: pafs.S3FileSystem, root: str, endpoint: str) -> None:
        self._fs = filesystem
        self.root = root
        """`bucket/prefix`, without a trailing slash."""
        self._endpoint = endpoint

    def put(self, path: str, data: pa.Buffer | bytes) -> None:
        key = f"{self.root}/{path}"
        try:
            with self._fs.open_output_stream(key) as stream:
                stream.write(data)
        except (OSError, pa.ArrowException) as error:
            raise SinkError(f"s3://{key}: {error}") from error

    def describe(self) -> str:
        where = f" at {self._endpoint}" if self._endpoint else ""
        return f"s3://{self.root}{where}"


def filesystem_for(url: str, endpoint: str = "") -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and root path of a sink URL (a local path or `s3://bucket/prefix`):
    what a reader passes to `pyarrow.dataset.dataset(root, filesystem=..., partitioning="hive")`."""
    if url.startswith("s3://"):
        root = url.removeprefix("s3://").strip("/")
        if not root:
            raise ValueError(f"{url!r}: an s3:// sink names a bucket (s3://bucket/prefix)")
        return _s3_filesystem(endpoint), root
    if "://" in url:
        raise ValueError(f"{url!r}: a sink is a local directory or s3://bucket/prefix")
    return pafs.LocalFileSystem(), str(Path(url).absolute())


def open_sink(url: str, endpoint: str = "") -> Sink:
    """The sink a `capture_sink` setting names (see `filesystem_for`)."""
    filesystem, root = filesystem_for(url, endpoint)
    if isinstance(filesystem, pafs.S3FileSystem):
        return S3Sink(filesystem, root, _endpoint_text(endpoint))
    return LocalSink(Path(root))


def _s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    """An S3 client: credentials from the standard AWS chain; `endpoint` (`http(s)://host:port`)
    for an S3-compatible server; region from `AWS_REGION`/`AWS_DEFAULT_REGION` (else us-east-1:
    with an explicit endpoint the client must not go looking for the bucket's region)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options: dict[str, object] = {
        "region": region,
        "connect_timeout": S3_CONNECT_TIMEOUT_S,
        "request_timeout": S3_REQUEST_TIMEOUT_S,
        "background_writes": False,  # the writer's own thread waits for the upload
    }
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.username or parts.password:
            raise ValueError(
                "capture_s3_endpoint must not carry credentials: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"capture_s3_endpoint {endpoint!r}: expected http(s)://host[:port]")
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
    return pafs.S3FileSystem(**options)


def _endpoint_text(endpoint: str) -> str:
    if not endpoint:
        return ""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return f"{parts.scheme}://{parts.netloc}"
