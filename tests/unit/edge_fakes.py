"""Fakes for edge unit tests: a manifest factory and the engine seam over numpy functions.

`FakeRegistry` implements what the edge calls (`start`, `resolve`, `statuses`, `ready`,
`close`); `serving` runs the real app (lifespan included) over it through ASGI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import numpy as np

from server.app import create_app
from server.errors import ModelNotFound, ModelNotReady
from server.metrics.instruments import Metrics
from server.registry.manifest import (
    BatchingPolicy,
    FeatureSpec,
    Lineage,
    ModelManifest,
    TensorSpec,
)
from server.settings import Settings

Compute = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def make_manifest(name: str, inputs: list[tuple[str, str, list[int]]],
                  outputs: list[tuple[str, str, list[int]]], version: int = 1,
                  features: FeatureSpec | None = None, batching: BatchingPolicy | None = None,
                  onnx_sha256: str = "0" * 64) -> ModelManifest:
    """A valid `ModelManifest` with test lineage."""
    return ModelManifest(
        name=name, version=version,
        inputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in inputs],  # type: ignore[arg-type]
        outputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in outputs],  # type: ignore[arg-type]
        features=features, batching=batching or BatchingPolicy(),
        lineage=Lineage(architecture="test", git_commit="abc123", dataset_sha256="d" * 64,
                        metrics={"auc": 0.9}),
        onnx_sha256=onnx_sha256,
    )


@dataclass
class FakeServedVersion:
    """A served version that computes its outputs with a numpy function, or raises `error`."""

    manifest: ModelManifest
    compute: Compute
    provider: str = "CPUExecutionProvider"
    error: Exception | None = None
    calls: list[tuple[dict[str, np.ndarray], int, float | None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    async def infer(self, inputs: dict[str, np.ndarray], rows: int,
                    deadline: float | None) -> dict[str, np.ndarray]:
        self.calls.append((inputs, rows, deadline))
        if self.error is not None:
            raise self.error
        return self.compute(inputs)


@dataclass
class FakeStatus:
    name: str
    version: int
    state: str
    reason: str | None = None


class FakeRegistry:
    """The engine seam over a fixed set of versions; the highest version of a model serves."""

    def __init__(self, versions: list[FakeServedVersion], not_ready: frozenset[str] = frozenset()) -> None:
        self.versions = {(v.name, v.version): v for v in versions}
        self.not_ready = not_ready
        self.started = False
        self.closed_with: float | None = None

    async def start(self) -> None:
        self.started = True

    def resolve(self, name: str, version: int | None = None) -> FakeServedVersion:
        known = sorted(v for (n, v) in self.versions if n == name)
        if not known and name not in self.not_ready:
            raise ModelNotFound(name)
        if name in self.not_ready:
            raise ModelNotReady(f"model {name!r} is not ready")
        chosen = known[-1] if version is None else version
        if chosen not in known:
            raise ModelNotFound(name, version)
        return self.versions[(name, chosen)]

    def statuses(self) -> list[FakeStatus]:
        return [FakeStatus(n, v, "READY") for (n, v) in self.versions]

    @property
    def ready(self) -> bool:
        return self.started and not self.not_ready

    async def close(self, timeout_s: float) -> None:
        self.closed_with = timeout_s



@asynccontextmanager
async def serving(settings: Settings, registry: FakeRegistry) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over a fake registry, lifespan run, reached in-process through ASGI."""
    app = create_app(settings, registry=registry, metrics=Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://hotserve") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
