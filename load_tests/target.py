"""What the load scenarios send: the served model's signature, read from its metadata, and pools of
ready-made request bodies (v2 JSON, v2 binary, v1 records for known and unknown entities).

Bodies are encoded once, before the load starts, so the generator spends its CPU on sending and
checking, not on building JSON. v1 records carry what the model's feature view says a client
sends: the entity key and the request features, drawn from the entity table the server's store
was filled from (`demo:fraud` by default), with a configurable share of entity ids the store
has never seen, which must be answered 404 naming the entity.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.features.table import read_table
from server.protocol.datatypes import numpy_dtype, tensor_to_bytes

POOL_SIZE = 256
"""Distinct bodies per scenario, sent round robin (enough variety for the batcher and the cache)."""
ENTITY_LIMIT = 5000


@dataclass(frozen=True)
class Body:
    """One encoded request: its bytes, headers, the rows it carries and, for v1, its entity."""

    data: bytes
    headers: dict[str, str]
    rows: int
    entity: str | None = None


@dataclass
class Target:
    """A served model as the scenarios see it."""

    host: str
    model: str
    input_name: str
    datatype: str
    sample_shape: list[int]
    """The input's shape without the batch axis."""
    outputs: list[str]
    rows: int
    v2_json: list[Body] = field(default_factory=list)
    v2_binary: list[Body] = field(default_factory=list)
    v1_known: list[Body] = field(default_factory=list)
    """Records whose entity the store holds (empty: the model takes no v1 records with a join)."""
    v1_unknown: list[Body] = field(default_factory=list)
    unknown_share: float = 0.0

    @property
    def v1_path(self) -> str:
        return f"/v1/models/{self.model}:predict"

    @property
    def v2_path(self) -> str:
        return f"/v2/models/{self.model}/infer"


def model_metadata(host: str, model: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{host}/v2/models/{model}", timeout=10) as response:
        doc: dict[str, Any] = json.load(response)
    return doc


def read_target(
    host: str,
    model: str,
    *,
    rows: int = 1,
    entities: str | None = "demo:fraud",
    unknown_share: float = 0.05,
    seed: int = 0,
) -> Target:
    """The model's signature from `host`, with body pools built from `entities` (a table the
    feature store was filled from) where the model has a feature view."""
    meta = model_metadata(host, model)
    spec = meta["inputs"][0]
    target = Target(
        host=host,
        model=model,
        input_name=spec["name"],
        datatype=spec["datatype"],
        sample_shape=[int(d) for d in spec["shape"][1:]],
        outputs=[o["name"] for o in meta["outputs"]],
        rows=rows,
        unknown_share=unknown_share,
    )
    if any(d < 0 for d in target.sample_shape):
        raise ValueError(
            f"{model}: input {target.input_name} has a variable axis besides the batch axis "
            f"({spec['shape']}); give the scenarios a fixed-shape model"
        )
    rng = np.random.default_rng(seed)
    features = meta.get("features") or {}
    table = _entity_rows(entities, features) if entities and features.get("view") else []
    samples = _samples(target, features, table, rng)
    target.v2_json = [_v2_json(target, s) for s in samples]
    target.v2_binary = [_v2_binary(target, s) for s in samples]
    if table:
        request_features = list(features["request_features"])
        key = str(features["entity_key"])
        picks = [[table[i] for i in group] for group in rng.integers(0, len(table), size=(POOL_SIZE, rows))]
        target.v1_known = [_v1(target, key, request_features, group) for group in picks]
        target.v1_unknown = [
            _v1(target, key, request_features, [{**row, key: _unknown(features, i)} for row in group])
            for i, group in enumerate(picks[:32])
        ]
    return target


def _entity_rows(source: str, features: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first row of each entity in `source` (up to ENTITY_LIMIT entities)."""
    key = features["entity_key"]
    wanted = [key, *features["columns"]]
    _, rows = read_table(source)
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        entity = str(row[key])
        if entity not in first:
            first[entity] = {name: row[name] for name in wanted if name in row}
            if len(first) >= ENTITY_LIMIT:
                break
    return list(first.values())


def _unknown(features: Mapping[str, Any], i: int) -> str | int:
    """An entity id no table here holds (the demo's are `c<number>`), of the view's key type."""
    return 10**15 + i if features["view"].get("entity_key_type") == "INT64" else f"unknown-{i}"


def _samples(
    target: Target, features: Mapping[str, Any], table: list[dict[str, Any]], rng: np.random.Generator
) -> list[np.ndarray]:
    """POOL_SIZE input tensors of `rows` rows: real table rows where the table holds every input
    column, standard normal values otherwise."""
    dtype = numpy_dtype(target.datatype)
    columns = list(features.get("columns") or [])
    shape = [target.rows, *target.sample_shape]
    if table and columns and target.sample_shape == [len(columns)] and all(c in table[0] for c in columns):
        matrix = np.array([[float(row[c]) for c in columns] for row in table])
        return [matrix[rng.integers(0, len(matrix), size=target.rows)].astype(dtype) for _ in range(POOL_SIZE)]
    if dtype.kind == "f":
        return [rng.standard_normal(shape).astype(dtype) for _ in range(POOL_SIZE)]
    return [rng.integers(0, 2, size=shape).astype(dtype) for _ in range(POOL_SIZE)]


def _tensor(target: Target, sample: np.ndarray) -> dict[str, Any]:
    return {"name": target.input_name, "datatype": target.datatype, "shape": list(sample.shape)}


def _v2_json(target: Target, sample: np.ndarray) -> Body:
    doc = {"id": "loadtest", "inputs": [{**_tensor(target, sample), "data": sample.ravel().tolist()}]}
    return Body(json.dumps(doc).encode(), {"Content-Type": "application/json"}, target.rows)


def _v2_binary(target: Target, sample: np.ndarray) -> Body:
    raw = tensor_to_bytes(sample)
    header = json.dumps(
        {
            "inputs": [{**_tensor(target, sample), "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in target.outputs],
        }
    ).encode()
    return Body(
        header + raw,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        target.rows,
    )


def _v1(target: Target, key: str, request_features: list[str], group: list[dict[str, Any]]) -> Body:
    records = [{key: row[key], **{name: row[name] for name in request_features}} for row in group]
    return Body(
        json.dumps({"instances": records}, default=_plain).encode(),
        {"Content-Type": "application/json"},
        len(records),
        entity=str(group[0][key]),
    )


def _plain(value: Any) -> Any:
    """numpy scalars from a table -> JSON numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
