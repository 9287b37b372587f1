"""A small Feast feature repository written from Python data, and Feast's own CLI calls on it.

Used by the Feast integration test and `load_tests/feast_benchmark.py`. This side needs no Feast:
it writes `feature_store.yaml` (file offline store, Redis online store, entity key serialization
3), one Parquet file per feature view and `views.json`; `feast_client.py`, run by the Python of
`.venv-feast` (`scripts/setup-feast-env.sh`, Feast pinned there, never in the server's install),
turns `views.json` into Feast objects and runs `feast apply`, `materialize` and
`get_online_features`.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
FEAST_PYTHON = ROOT / ".venv-feast" / "bin" / "python"
FEAST_CLIENT = Path(__file__).with_name("feast_client.py")

ARROW_TYPES = {"Float32": pa.float32(), "Float64": pa.float64(), "Int64": pa.int64(), "Int32": pa.int32()}
ARROW_TYPES["Bool"] = pa.bool_()
ARROW_TYPES["String"] = pa.string()


@dataclass
class FeastView:
    """One Feast feature view: its entity's join key (`INT64` or `STRING`), typed features, rows.

    Each row holds the join key, every feature (None: null) and `event_timestamp` (Unix seconds)."""

    name: str
    join_key: str
    key_type: str
    features: list[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)


def connection_string(redis_url: str) -> str:
    """Feast's `host:port,db=N` form of a `redis://host:port/N` URL."""
    parts = urlsplit(redis_url)
    db = parts.path.strip("/") or "0"
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379},db={db}"


def write_repository(folder: Path, project: str, redis_url: str, views: list[FeastView]) -> Path:
    """The feature repository in `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        f"registry: {folder / 'registry.db'}\n"
        "offline_store:\n  type: file\n"
        f"online_store:\n  type: redis\n  connection_string: {connection_string(redis_url)!r}\n"
        "entity_key_serialization_version: 3\n"
    )
    described = []
    for view in views:
        key_type = pa.int64() if view.key_type == "INT64" else pa.string()
        columns: dict[str, pa.Array] = {view.join_key: pa.array([r[view.join_key] for r in view.rows], key_type)}
        for name, dtype in view.features:
            columns[name] = pa.array([r[name] for r in view.rows], ARROW_TYPES[dtype])
        columns["event_timestamp"] = pa.array(
            [datetime.fromtimestamp(r["event_timestamp"], UTC) for r in view.rows], pa.timestamp("us", tz="UTC")
        )
        path = folder / f"{view.name}.parquet"
        pq.write_table(pa.table(columns), path)
        described.append(
            {"name": view.name, "join_key": view.join_key, "key_type": view.key_type, "features": view.features}
        )
    (folder / "views.json").write_text(json.dumps(described))
    (folder / "definitions.py").write_text(DEFINITIONS)
    return folder


DEFINITIONS = '''"""Feast objects from views.json (written by hotserve's load_tests/feast_repo.py)."""

import json
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast import types

HERE = Path(__file__).parent
for spec in json.loads((HERE / "views.json").read_text()):
    entity = Entity(
        name=spec["join_key"],
        join_keys=[spec["join_key"]],
        value_type=ValueType.INT64 if spec["key_type"] == "INT64" else ValueType.STRING,
    )
    globals()[spec["name"]] = FeatureView(
        name=spec["name"],
        entities=[entity],
        ttl=timedelta(days=3650),
        schema=[Field(name=name, dtype=getattr(types, dtype)) for name, dtype in spec["features"]],
        source=FileSource(path=str(HERE / f"{spec['name']}.parquet"), timestamp_field="event_timestamp"),
        online=True,
    )
    globals()[spec["join_key"] + "_entity"] = entity
'''


def feast(folder: Path, *args: str, stdin: str | None = None, timeout_s: float = 300.0) -> str:
    """Run `feast_client.py` with Feast's Python on the repository; its stdout (JSON for `online`)."""
    if not FEAST_PYTHON.exists():
        raise FileNotFoundError(f"{FEAST_PYTHON} missing: run scripts/setup-feast-env.sh")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        # -P: the script folder (load_tests/, with its own operator.py) must not shadow the stdlib.
        [str(FEAST_PYTHON), "-P", str(FEAST_CLIENT), str(folder), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"feast_client {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def apply_and_materialize(folder: Path, start: float, end: float) -> None:
    """`feast apply`, then `feast materialize START END` (Unix seconds) into the online store."""
    feast(folder, "materialize", str(start), str(end))


def online_features(folder: Path, features: list[str], entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feast's `get_online_features(features, entity_rows).to_dict()`, one dict per entity row."""
    out = feast(folder, "online", stdin=json.dumps({"features": features, "entities": entities}))
    rows: list[dict[str, Any]] = json.loads(out)
    return rows
