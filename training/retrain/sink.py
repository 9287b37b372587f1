"""Where captured rows and labels are read: the capture sink's URL as a pyarrow filesystem.

The same URL forms as the server's `HOTSERVE_CAPTURE_SINK`: a local directory, or
`s3://bucket/prefix` with credentials from the standard AWS_* environment variables and, for
an S3-compatible server, its endpoint from `HOTSERVE_CAPTURE_S3_ENDPOINT` (or AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pyarrow import fs

ENDPOINT_VARIABLES = ("HOTSERVE_CAPTURE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class Sink:
    """A filesystem and the root path of the capture tree on it."""

    filesystem: fs.FileSystem
    root: str
    url: str
    """The URL as given (never holds credentials: those come from the environment)."""

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])


def _s3(url: str, endpoint: str | None) -> Sink:
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"capture sink {url!r}: an S3 URL names a bucket (s3://bucket/prefix)")
    options: dict[str, object] = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    if endpoint:
        target = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = target.netloc
        options["scheme"] = target.scheme
    root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    return Sink(fs.S3FileSystem(**options), root, url)


def open_sink(url: str, endpoint: str | None = None) -> Sink:
    """The sink `url` names; `endpoint` defaults to the environment's (see the module docstring)."""
    if not url.strip():
        raise ValueError("no capture sink: give --sink or set HOTSERVE_CAPTURE_SINK")
    if url.startswith("s3://"):
        chosen = endpoint or next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
        return _s3(url, chosen)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"capture sink {url!r}: expected a directory or s3://bucket/prefix")
    path = Path(url.removeprefix("file://")).resolve()
    if not path.is_dir():
        raise ValueError(f"capture sink {path} is not a directory")
    return Sink(fs.LocalFileSystem(), str(path), url)
