"""Feast benchmark: hotserve's feature lookup through Feast's Redis layout vs its native layout, beside
Feast's own `get_online_features`, on the same Redis and the same entities, in one run.

A redis-server of the benchmark's own; one Feast feature view of 50 Float64 features keyed by an
INT64 `driver_id`, materialized by Feast itself (`.venv-feast`, `scripts/setup-feast-env.sh`); the
same values written in hotserve's native layout. Each timed call is one in-process lookup with the
local cache off, so every call is a Redis round trip: hotserve's `FeatureJoin.join` (records in,
joined records out: the request path's lookup, gathering, breaker, decoding, staleness and
metrics) and Feast's `get_online_features(...).to_dict()` (its Python SDK, in its own process).

    python -m load_tests.feast_benchmark                # writes its section of docs/benchmarks.md
    python -m load_tests.feast_benchmark --runs 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from load_tests.feast_repo import FeastView, apply_and_materialize, feast, write_repository
from load_tests.feature_benchmark import redis_server, store_rows
from load_tests.markdown import replace_section
from load_tests.server_process import free_port
from server.contract.manifest import FeastSource, FeatureView, StoredFeature
from server.features.feast_store import FeastRedisFeatureStore
from server.features.join import FeatureJoin
from server.features.lookup import FeatureLookup
from server.features.redis_store import RedisFeatureStore
from server.features.store import EntityWrite
from server.metrics.instruments import Metrics

START, END = "<!-- feast-benchmark:start -->", "<!-- feast-benchmark:end -->"
ROOT = Path(__file__).resolve().parent.parent
PROJECT = "hotserve_bench"
FEAST_VIEW = "driver_wide"
FEATURES = [f"f{i:02d}" for i in range(50)]
ENTITIES = 200
SHAPES = (1, 100)
WARM_UP_CALLS = 5


def _values(entity: int) -> dict[str, float]:
    return {name: entity + i / 64 for i, name in enumerate(FEATURES)}


def _views() -> tuple[FeatureView, FeatureView]:
    features = [StoredFeature(name=name, datatype="FP64") for name in FEATURES]
    native = FeatureView(name="bench_native", entity_key="driver_id", entity_key_type="INT64", features=features)
    via_feast = native.model_copy(
        update={
            "name": "bench_feast",
            "feast": FeastSource(project=PROJECT, features={n: f"{FEAST_VIEW}:{n}" for n in FEATURES}),
        }
    )
    return native, FeatureView.model_validate(via_feast.model_dump())


def _quantiles_ms(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def _hotserve(redis_url: str, runs: dict[int, int]) -> dict[tuple[str, int], list[float]]:
    """Both layouts' lookups, call by call in turn, so both meet the same moments of a shared machine."""
    native, via_feast = _views()
    await store_rows(redis_url, native, [EntityWrite(str(e), _values(e), time.time()) for e in range(1, ENTITIES + 1)])
    native_lookup = FeatureLookup(RedisFeatureStore(redis_url, 5.0), Metrics(), cache_size=0)
    feast_lookup = FeatureLookup(FeastRedisFeatureStore(redis_url, 5.0), Metrics(), cache_size=0)
    join = FeatureJoin(native_lookup, feast_lookup)
    layouts = (("native", native), ("feast", via_feast))
    out: dict[tuple[str, int], list[float]] = {}
    for entities, count in runs.items():
        records: list[dict[str, Any]] = [{"driver_id": 1 + (i % ENTITIES)} for i in range(entities)]
        for layout, view in layouts:
            for _ in range(WARM_UP_CALLS):
                joined, _ = await join.join(records, view)
            assert all(len(r) == len(FEATURES) + 1 for r in joined), f"{layout}: a lookup came back incomplete"
            out[layout, entities] = []
        for _ in range(count):
            for layout, view in layouts:
                started = time.perf_counter()
                await join.join(records, view)
                out[layout, entities].append(time.perf_counter() - started)
    await join.close()
    return out


def _feast(folder: Path, runs: dict[int, int]) -> dict[tuple[str, int], list[float]]:
    out: dict[tuple[str, int], list[float]] = {}
    refs = [f"{FEAST_VIEW}:{n}" for n in FEATURES]
    for entities, count in runs.items():
        rows = [{"driver_id": 1 + (i % ENTITIES)} for i in range(entities)]
        request = json.dumps({"features": refs, "entities": rows, "runs": count + WARM_UP_CALLS})
        seconds: list[float] = json.loads(feast(folder, "time", stdin=request))
        out["feast sdk", entities] = seconds[WARM_UP_CALLS:]  # the first calls warm Feast's registry cache
    return out


def report(results: dict[tuple[str, int], list[float]], args: argparse.Namespace, started: str) -> list[str]:
    load = os.getloadavg()[0]
    lines = [
        START,
        "## Feast's Redis layout: hotserve's lookup vs Feast's own `get_online_features`",
        "",
        f"Measured {started} on {platform.node()}: {os.cpu_count()} cores, load average {load:.2f} at the "
        f"start; CPython {platform.python_version()}, Feast 0.67.0 (`.venv-feast`). Produced by:",
        "",
        "```bash",
        f"flock /tmp/hotserve-cpu.lock python -m load_tests.feast_benchmark --runs {args.runs}",
        "```",
        "",
        f"One redis-server of the benchmark's own; one Feast feature view of {len(FEATURES)} Float64 features "
        f"by an INT64 join key, {ENTITIES} entities materialized by `feast materialize`, the same values "
        "written in hotserve's native layout. Each call is one in-process lookup with no local cache (every "
        "call a Redis round trip): hotserve's `FeatureJoin.join` (records in, joined records out, as on the "
        "request path, on uvloop as the server runs) over `FeastRedisFeatureStore` (one pipelined write of "
        "HMGETs) or `RedisFeatureStore` (one MGET), the two layouts' calls taken in turn; Feast's Python SDK "
        "`get_online_features(...).to_dict()` in its own process. No HTTP on either side: Feast's published "
        "figures (its Python feature server, p99 about 7 ms at 1 x 50) include its HTTP server.",
        "",
        "| entities x features | reader | calls | p50 ms | p99 ms | Feast p99 / this p99 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for entities in SHAPES:
        feast_p99 = _quantiles_ms(results["feast sdk", entities])[1]
        for reader in ("feast", "native", "feast sdk"):
            seconds = results[reader, entities]
            p50, p99 = _quantiles_ms(seconds)
            name = {"feast": "hotserve, Feast layout", "native": "hotserve, native layout"}.get(reader, "Feast SDK")
            lines.append(
                f"| {entities} x {len(FEATURES)} | {name} | {len(seconds)} | {p50:.3f} | {p99:.3f} | "
                f"{feast_p99 / p99:.1f}x |"
            )
    p99_ratio = _quantiles_ms(results["feast sdk", 1])[1] / _quantiles_ms(results["feast", 1])[1]
    verdict = "meets it" if p99_ratio >= 3 else "misses it"
    lines += [
        "",
        f"Goal: hotserve's lookup p99 through Feast's layout at least 3x lower than Feast's Python client "
        f"for 1 x {len(FEATURES)}: {p99_ratio:.1f}x, {verdict}.",
        END,
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.feast_benchmark", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="timed calls per cell (100 x 50: a fifth)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found")
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs = {1: args.runs, 100: max(10, args.runs // 5)}
    with redis_server(free_port()) as redis_url, tempfile.TemporaryDirectory() as work:
        now = time.time()
        rows = [{"driver_id": e, **_values(e), "event_timestamp": now - 60} for e in range(1, ENTITIES + 1)]
        view = FeastView(FEAST_VIEW, "driver_id", "INT64", [(n, "Float64") for n in FEATURES], rows)
        folder = write_repository(Path(work) / "repo", PROJECT, redis_url, [view])
        apply_and_materialize(folder, now - 3600, now)
        # uvloop, as the server runs (uvicorn[standard]).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(_hotserve(redis_url, runs))
        results.update(_feast(folder, runs))
    lines = report(results, args, started)
    replace_section(args.out, START, END, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
