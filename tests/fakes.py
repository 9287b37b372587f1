"""The one set of small real stand-ins for tests of the engine and of the HTTP edge.

Engine: runtimes that echo, block or fail (they satisfy `server.runtime.base.Runtime`
without onnxruntime), a tiny real ONNX graph and repository writer for tests that need
onnxruntime itself. Edge: `FakeRegistry` and `FakeServedVersion` implement what the edge
calls (`server/api/deps.py`) over numpy functions; `serving` runs the real app (lifespan
included) over them through ASGI. One manifest factory (`make_manifest`) for both.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from server.app import create_app
from server.contract.manifest import (
    BatchingPolicy,
    DriftReference,
    FeatureSpec,
    FeatureView,
    Lineage,
    ModelManifest,
    TensorSpec,
)
from server.errors import FeatureStoreUnavailable, HotserveError, ModelNotFound, ModelNotReady
from server.evidence.recorder import MemoryEvidenceRecorder
from server.features.memory_store import MemoryFeatureStore
from server.features.store import StoredRow
from server.metrics.instruments import Metrics
from server.protocol.schema import ModelSchema
from server.request import InferenceRequest, Tensors
from server.routing.table import Route
from server.settings import Settings

Compute = Callable[[Tensors], Tensors]


def make_manifest(
    name: str,
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    version: int = 1,
    features: FeatureSpec | None = None,
    batching: BatchingPolicy | None = None,
    onnx_sha256: str = "0" * 64,
) -> ModelManifest:
    """A valid `ModelManifest` with test lineage."""
    return ModelManifest(
        name=name,
        version=version,
        inputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in inputs],  # type: ignore[arg-type]
        outputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in outputs],  # type: ignore[arg-type]
        features=features,
        batching=batching or BatchingPolicy(),
        lineage=Lineage(architecture="test", git_commit="abc123", dataset_sha256="d" * 64, metrics={"auc": 0.9}),
        onnx_sha256=onnx_sha256,
    )


def fake_manifest(
    name: str = "echo", version: int = 1, features: int = 3, batching: BatchingPolicy | None = None
) -> ModelManifest:
    """A manifest with one FP32 input `x` [-1, features] and one FP32 output `y` of the same shape."""
    return make_manifest(
        name, [("x", "FP32", [-1, features])], [("y", "FP32", [-1, features])], version=version, batching=batching
    )


UNTIL_HANG_GUARD_S = 60.0
"""How long `until` waits for a condition before failing: a guard against hangs, never a pace."""
_YIELD_ONLY_TURNS = 1_000


async def until(condition: Callable[[], bool], hang_guard_s: float = UNTIL_HANG_GUARD_S) -> None:
    """Wait until `condition` holds: synchronises on state, never on time.

    The first turns only yield to the loop (tasks reaching their next await); then each check
    also lets other threads run for a millisecond, since a condition may wait on a batch in a
    worker thread, whose progress no count of loop turns measures on a busy machine (a bound in
    turns failed there). Fails after `hang_guard_s`, a guard against hangs only."""
    give_up = time.monotonic() + hang_guard_s
    turns = 0
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"condition never held in {hang_guard_s:g} s")
        turns += 1
        await asyncio.sleep(0 if turns < _YIELD_ONLY_TURNS else 0.001)


class ManualClock:
    """Wall-clock seconds (`time.time()` stand-in) that a test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(inputs: Tensors, rows: int | None = None, deadline: float | None = None) -> InferenceRequest:
    """An `InferenceRequest`; `rows` defaults to the first input's batch axis."""
    if rows is None:
        rows = int(next(iter(inputs.values())).shape[0])
    return InferenceRequest(inputs, rows, deadline)


class EchoRuntime:
    """Returns input `x` as output `y`, row for row; records the row count of every batch."""

    provider = "FakeExecutionProvider"

    def __init__(self, features: int = 3) -> None:
        self.inputs = [TensorSpec(name="x", datatype="FP32", shape=[-1, features])]
        self.outputs = [TensorSpec(name="y", datatype="FP32", shape=[-1, features])]
        self.batch_rows: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self._lock:
            self.batch_rows.append(int(x.shape[0]))
        return {"y": np.array(x, copy=True)}

    def close(self) -> None:
        self.closed = True


class SlowRuntime(EchoRuntime):
    """An EchoRuntime whose every run blocks until `gate` is set.

    Lets a test hold all workers busy while it queues requests, then release them.
    """

    def __init__(self, features: int = 3) -> None:
        super().__init__(features)
        self.gate = threading.Event()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.gate.wait(timeout=30):
            raise TimeoutError("SlowRuntime gate was never opened")
        return super().run(inputs)


class FailingRuntime(EchoRuntime):
    """Raises on every batch, or with `poison` set only on batches containing that value in `x`."""

    def __init__(self, features: int = 3, poison: float | None = None) -> None:
        super().__init__(features)
        self.poison = poison

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.poison is None or bool(np.any(inputs["x"] == self.poison)):
            raise RuntimeError("injected runtime failure")
        return super().run(inputs)


@dataclass
class FakeServedVersion:
    """A served version that computes its outputs with a numpy function, or raises `error`."""

    manifest: ModelManifest
    compute: Compute
    provider: str = "CPUExecutionProvider"
    error: Exception | None = None
    calls: list[InferenceRequest] = field(default_factory=list)
    leases: int = 0

    def __post_init__(self) -> None:
        self.schema = ModelSchema.from_manifest(self.manifest)
        self.evidence = MemoryEvidenceRecorder().open_load(self.manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def default_timeout_s(self) -> float | None:
        timeout_ms = self.manifest.batching.default_timeout_ms
        return None if timeout_ms is None else timeout_ms / 1000.0

    async def infer(self, request: InferenceRequest) -> Tensors:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        return self.compute(request.inputs)

    def lease(self) -> None:
        self.leases += 1

    def release(self) -> None:
        self.leases -= 1


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
        self.routing_keys: list[str | None] = []
        self.sticky: dict[str, str] = {}

    async def start(self) -> None:
        self.started = True

    def route(
        self, name: str, version: int | None = None, routing_key: str | None = None, by_entity: bool = False
    ) -> Route:
        """No shadow; `sticky[name]` names the entity field of a split that records the key it picks by."""
        served = self.resolve(name, version)
        entity_field = self.sticky.get(name) if version is None else None
        if by_entity and routing_key is None and entity_field is not None:
            return Route(None, None, _KeyRecordingSplit(self.routing_keys, served), entity_field)  # type: ignore[arg-type]
        self.routing_keys.append(routing_key)
        return Route(served)  # type: ignore[arg-type]

    def unroutable(self, name: str, version: int | None) -> HotserveError:
        try:
            self.resolve(name, version)
        except HotserveError as error:
            return error
        return ModelNotReady(f"model {name!r} has no ready version")

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


@dataclass
class _KeyRecordingSplit:
    """A one-version split that records the routing key each pick hashes."""

    keys: list[str | None]
    served: FakeServedVersion

    @property
    def targets(self) -> tuple[FakeServedVersion, ...]:
        return (self.served,)

    def pick(self, routing_key: str | None) -> FakeServedVersion:
        self.keys.append(routing_key)
        return self.served


@asynccontextmanager
async def serving(settings: Settings, registry: FakeRegistry) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over a fake registry, lifespan run, reached in-process through ASGI."""
    app = create_app(settings, registry=registry, metrics=Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://hotserve") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def write_tiny_mlp(path: Path, features: int = 3, outputs: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a real ONNX graph `y = sigmoid(x @ W + b)` with a dynamic batch axis; return (W, b).

    Input `x` FP32 [N, features], output `y` FP32 [N, outputs]. Built with `onnx.helper`
    (imported here so that importing this module never needs onnx).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(features, outputs)).astype(np.float32)
    bias = rng.normal(size=(outputs,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["y"]),
        ],
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return weight, bias


def tiny_mlp_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What `write_tiny_mlp`'s graph computes, in numpy."""
    return 1.0 / (1.0 + np.exp(-(x @ weight + bias)))


def write_model_version(
    repository: Path,
    name: str,
    version: int,
    features: int = 3,
    outputs: int = 2,
    batching: BatchingPolicy | None = None,
    drift: DriftReference | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write `<repository>/<name>/<version>/` with a tiny MLP and a matching `model.json`.

    The weights depend on `version`, so answers tell versions apart. Returns (W, b).
    """
    from server.contract.manifest import sha256_file

    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    weight, bias = write_tiny_mlp(folder / "model.onnx", features, outputs, seed=version)
    ModelManifest(
        name=name,
        version=version,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, features])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, outputs])],
        batching=batching or BatchingPolicy(max_batch_size=8),
        drift=drift,
        lineage=Lineage(architecture="tiny_mlp"),
        onnx_sha256=sha256_file(folder / "model.onnx"),
    ).write(folder)
    return weight, bias


class ControlledStore(MemoryFeatureStore):
    """The embedded feature store with switches: records each round trip's keys, can be `down`,
    and can hold its answers until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.down = False
        self.gate: asyncio.Event | None = None

    async def get_many(self, entity_keys: Sequence[str], view: FeatureView) -> list[StoredRow]:
        self.calls.append(list(entity_keys))
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise FeatureStoreUnavailable("feature store test store unavailable (switched off)")
        return await super().get_many(entity_keys, view)


def break_version(folder: Path, how: str) -> str:
    """Spoil a version written by `write_model_version`; returns what its load failure must say.

    `sha256`: model.onnx changed after export. `graph`: model.json promises another input
    shape than the graph has. `warm_up`: a valid graph (sha256 updated) that fails when run,
    a Reshape no batch of 1 row can satisfy.
    """
    import json

    from onnx import TensorProto, helper, numpy_helper

    from server.contract.manifest import sha256_file

    manifest_path = folder / "model.json"
    manifest = json.loads(manifest_path.read_text())
    if how == "sha256":
        with (folder / "model.onnx").open("ab") as fh:
            fh.write(b"\0")
        return "sha256"
    if how == "graph":
        manifest["inputs"][0]["shape"] = [-1, 5]
        manifest_path.write_text(json.dumps(manifest))
        return "axis 1 is 3 in the graph, model.json says 5"
    if how == "warm_up":
        features, outputs = manifest["inputs"][0]["shape"][1], manifest["outputs"][0]["shape"][1]
        graph = helper.make_graph(
            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
            "bad_reshape",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
            initializer=[numpy_helper.from_array(np.array([-1, features + 1], dtype=np.int64), "shape")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        (folder / "model.onnx").write_bytes(model.SerializeToString())
        manifest["onnx_sha256"] = sha256_file(folder / "model.onnx")
        manifest_path.write_text(json.dumps(manifest))
        return "warm-up with 1 rows failed"
    raise ValueError(f"unknown way to break a version: {how!r}")
