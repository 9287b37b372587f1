"""Serving benchmark: the server with batching vs without vs in-process onnxruntime, in one run.

For each model (the demo MLP and the heavier transformer encoder) it measures:
  * the ceiling: in-process onnxruntime at its best batch size (rows/s);
  * the real server (`hotserve serve`, a subprocess) with the model's batching policy, and the same
    server with batching off, at several client counts, with v2 JSON and v2 binary bodies,
driving load with wrk (a C load generator: a Python client would eat the server's cores).
Mean batch sizes come from the server's own `hotserve_batch_size` histogram.

    python -m load_tests.benchmark                 # full run, writes docs/benchmarks.md
    python -m load_tests.benchmark --duration 3 --clients 1,64 --models fraud
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from load_tests.markdown import utc_minute
from load_tests.server_process import ServerProcess, start_server
from server.contract.manifest import ONNX_FILENAME, ModelManifest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "load_tests" / "results"
CHECKPOINTS = RESULTS / "checkpoints"
"""Where the load tests train the demo models they export: their own folder, never beside a
repository given with --repository (a user's `checkpoints/` there would gain versions)."""
LUA_SCRIPT = ROOT / "load_tests" / "wrk_post.lua"
BIN = Path(sys.executable).parent

# model name -> how to make it when the benchmark repository lacks it
MODELS: dict[str, list[str]] = {
    "fraud": ["--arch", "mlp", "--dataset", "demo:fraud"],
    "encoder": ["--arch", "transformer", "--dataset", "demo:sequences", "--rows", "512", "--epochs", "1"],
}


@dataclass
class LoadResult:
    model: str
    mode: str  # "batching" | "no batching"
    protocol: str  # "json" | "binary"
    clients: int
    rows_per_request: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch_rows: float
    errors: int


@dataclass
class Ceiling:
    model: str
    batch_size: int
    rows_per_s: float
    ms_per_batch: float


# --- model repository ------------------------------------------------------------------------


def prepare_repository(repo: Path, models: list[str], checkpoints: Path = CHECKPOINTS) -> None:
    """Train (into `checkpoints`) + export each missing model into `repo` (needs the `train` extra)."""
    for name in models:
        if (repo / name).is_dir() and any((repo / name).iterdir()):
            continue
        print(f"== training and exporting {name!r} into {repo}", flush=True)
        subprocess.run(
            [
                str(BIN / "hotserve"),
                "train",
                "--name",
                name,
                "--quiet",
                "--checkpoints",
                str(checkpoints),
                *MODELS[name],
            ],
            check=True,
        )
        subprocess.run(
            [str(BIN / "hotserve"), "export", str(checkpoints / name), "--repository", str(repo)], check=True
        )


def latest_version_dir(repo: Path, name: str) -> Path:
    versions = [p for p in (repo / name).iterdir() if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


def without_batching(repo: Path, models: list[str], dest: Path) -> Path:
    """A copy of the repository whose latest versions have `batching.enabled = false`."""
    for name in models:
        src = latest_version_dir(repo, name)
        out = dest / name / src.name
        out.mkdir(parents=True)
        shutil.copy2(src / ONNX_FILENAME, out / ONNX_FILENAME)
        manifest = ModelManifest.read(src)
        manifest.model_copy(update={"batching": manifest.batching.model_copy(update={"enabled": False})}).write(out)
    return dest


# --- request bodies --------------------------------------------------------------------------


def example_rows(manifest: ModelManifest, rows: int, seed: int = 0) -> np.ndarray:
    """Plausible raw inputs: mid-bin values of the drift reference where known, else N(0,1)."""
    spec = manifest.inputs[0]
    shape = [rows if i == 0 else d for i, d in enumerate(spec.shape)]
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape).astype(np.float32)
    if manifest.features and manifest.drift and manifest.drift.features:
        by_name = {h.name: h for h in manifest.drift.features}
        for col, name in enumerate(manifest.features.columns):
            if name in by_name:
                edges = np.asarray(by_name[name].bin_edges)
                centers = (edges[:-1] + edges[1:]) / 2
                data[:, col] = rng.choice(centers, size=rows)
    return data


def bodies(manifest: ModelManifest, rows: int) -> dict[str, tuple[bytes, str, int | None]]:
    """protocol -> (body, content type, Inference-Header-Content-Length)."""
    spec = manifest.inputs[0]
    data = example_rows(manifest, rows)
    output = manifest.outputs[0].name
    tensor = {"name": spec.name, "datatype": spec.datatype, "shape": list(data.shape)}
    as_json = json.dumps({"inputs": [{**tensor, "data": data.ravel().tolist()}]}).encode()
    raw = data.astype(np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": output, "parameters": {"binary_data": True}}],
        }
    ).encode()
    return {
        "json": (as_json, "application/json", None),
        "binary": (header + raw, "application/octet-stream", len(header)),
    }


# --- server process --------------------------------------------------------------------------


def serving(repo: Path, log: Path) -> ServerProcess:
    """This checkout's server on `repo`, ready; the caller's `HOTSERVE_*` tuning reaches it."""
    tuning = {k: v for k, v in os.environ.items() if k.startswith("HOTSERVE_")}
    return start_server(repo, log, env={**tuning, "HOTSERVE_LOG_LEVEL": "warning"}, startup_timeout_s=120)


def batch_stats(url: str, model: str) -> tuple[float, float]:
    """(sum, count) of the server's hotserve_batch_size histogram for `model`."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        m = re.match(r"hotserve_batch_size_(sum|count)\{([^}]*)\} (\S+)", line)
        if m and f'model="{model}"' in m.group(2):
            if m.group(1) == "sum":
                total += float(m.group(3))
            else:
                count += float(m.group(3))
    return total, count


# --- load ------------------------------------------------------------------------------------


def wrk_rate(stats: dict[str, float]) -> float:
    """Requests per second of a wrk run (`run_wrk`'s stats)."""
    return stats["requests"] / (stats["duration_us"] / 1e6)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of process `pid` (all its threads), or of its thread `thread`
    (`pid` itself: the main thread), in seconds, from /proc."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3 of stat(5), so utime (14) and stime (15) are 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_errors(stats: dict[str, float]) -> int:
    """Every request of a wrk run that did not get a 2xx/3xx answer in time (`run_wrk`'s stats)."""
    return int(sum(stats[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")))


def run_wrk(
    url: str, body: bytes, content_type: str, header_length: int | None, clients: int, duration_s: int, workdir: Path
) -> dict[str, float]:
    body_file = workdir / "body.bin"
    body_file.write_bytes(body)
    env = {
        **os.environ,
        "WRK_BODY": str(body_file),
        "WRK_CONTENT_TYPE": content_type,
        "WRK_HEADER_LENGTH": "" if header_length is None else str(header_length),
    }
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{duration_s}s", "--timeout", "10s", "-s", str(LUA_SCRIPT), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    stats: dict[str, float] = json.loads(line.removeprefix("WRK_JSON "))
    return stats


def measure(
    urls: dict[str, str],
    manifest: ModelManifest,
    protocols: list[str],
    clients_list: list[int],
    duration_s: int,
    workdir: Path,
) -> list[LoadResult]:
    """wrk against every server in `urls` (mode -> base URL), cell by cell, modes interleaved so
    that drift in the machine's speed during the run does not favour one mode."""
    results = []
    for protocol, (body, ctype, hlen) in bodies(manifest, 1).items():
        if protocol not in protocols:
            continue
        for url in urls.values():  # warm connections and allocators before measuring
            run_wrk(f"{url}/v2/models/{manifest.name}/infer", body, ctype, hlen, 4, 1, workdir)
        for clients in clients_list:
            for mode, url in urls.items():
                infer_url = f"{url}/v2/models/{manifest.name}/infer"
                before = batch_stats(url, manifest.name)
                w = run_wrk(infer_url, body, ctype, hlen, clients, duration_s, workdir)
                after = batch_stats(url, manifest.name)
                batches = after[1] - before[1]
                rps = wrk_rate(w)
                errors = wrk_errors(w)
                result = LoadResult(
                    model=manifest.name,
                    mode=mode,
                    protocol=protocol,
                    clients=clients,
                    rows_per_request=1,
                    requests_per_s=rps,
                    rows_per_s=rps,
                    p50_ms=w["p50_us"] / 1000,
                    p99_ms=w["p99_us"] / 1000,
                    mean_batch_rows=(after[0] - before[0]) / batches if batches else 0.0,
                    errors=errors,
                )
                print(
                    f"   {mode:12s} {protocol:6s} c={clients:<3d} {rps:9.0f} req/s  "
                    f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                    f"batch {result.mean_batch_rows:5.1f}  errors {errors}",
                    flush=True,
                )
                results.append(result)
    return results


def inprocess_ceiling(
    version_dir: Path, manifest: ModelManifest, duration_s: float, batch_sizes: list[int]
) -> list[Ceiling]:
    """rows/s of a plain onnxruntime session called in a loop, per batch size."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(version_dir / ONNX_FILENAME), providers=["CPUExecutionProvider"])
    out = []
    for batch in batch_sizes:
        feed = {manifest.inputs[0].name: example_rows(manifest, batch)}
        session.run(None, feed)
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < duration_s:
            session.run(None, feed)
            calls += 1
        out.append(Ceiling(manifest.name, batch, calls * batch / elapsed, elapsed / calls * 1000))
        print(f"   in-process batch {batch:<4d} {calls * batch / elapsed:9.0f} rows/s", flush=True)
    return out


# --- report ----------------------------------------------------------------------------------


def _find(results: list[LoadResult], **kw: object) -> LoadResult | None:
    return next((r for r in results if all(getattr(r, k) == v for k, v in kw.items())), None)


def summary_lines(results: list[LoadResult], ceilings: list[Ceiling]) -> list[str]:
    """The issue's targets as ratios measured in this run."""
    lines = []
    for model in sorted({r.model for r in results}):
        best = max((c for c in ceilings if c.model == model), key=lambda c: c.rows_per_s, default=None)
        top_c = max(r.clients for r in results if r.model == model)
        for protocol in ("json", "binary"):
            on = _find(results, model=model, mode="batching", protocol=protocol, clients=top_c)
            off = _find(results, model=model, mode="no batching", protocol=protocol, clients=top_c)
            if on and off and off.requests_per_s:
                lines.append(
                    f"- `{model}` {protocol}, {top_c} clients: batching gives "
                    f"{on.requests_per_s / off.requests_per_s:.2f}x the throughput of batching off "
                    f"({on.requests_per_s:.0f} vs {off.requests_per_s:.0f} req/s); p99 "
                    f"{on.p99_ms:.1f} ms vs {off.p99_ms:.1f} ms"
                )
            served = [r for r in results if r.model == model and r.mode == "batching" and r.protocol == protocol]
            if best and served:
                top = max(served, key=lambda r: r.rows_per_s)
                lines.append(
                    f"- `{model}` {protocol}: best served {top.rows_per_s:.0f} rows/s "
                    f"({top.clients} clients) = {top.rows_per_s / best.rows_per_s:.1%} of in-process "
                    f"onnxruntime's best {best.rows_per_s:.0f} rows/s (batch {best.batch_size})"
                )
        on1 = _find(results, model=model, mode="batching", protocol="json", clients=1)
        off1 = _find(results, model=model, mode="no batching", protocol="json", clients=1)
        if on1 and off1:
            lines.append(
                f"- `{model}` json, 1 client: p50 {on1.p50_ms:.3f} ms with batching vs "
                f"{off1.p50_ms:.3f} ms without ({(on1.p50_ms - off1.p50_ms):+.3f} ms)"
            )
        js = _find(results, model=model, mode="batching", protocol="json", clients=top_c)
        bn = _find(results, model=model, mode="batching", protocol="binary", clients=top_c)
        if js and bn and js.requests_per_s:
            lines.append(
                f"- `{model}` {top_c} clients: binary/JSON throughput "
                f"{bn.requests_per_s / js.requests_per_s:.2f}x "
                f"({bn.requests_per_s:.0f} vs {js.requests_per_s:.0f} req/s)"
            )
    return lines


def write_report(
    path: Path, results: list[LoadResult], ceilings: list[Ceiling], args: argparse.Namespace, started: str
) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {started} on {platform.node()}: {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; load from wrk "
        f"(`-t1`, one thread sharing the same cores as the server), {args.duration:g} s per cell, "
        "one row per request. Produced by:",
        "",
        "```bash",
        "python -m load_tests.benchmark " + " ".join(sys.argv[1:]),
        "```",
        "",
        "Both servers (`batching`: the model's own `model.json` policy; `no batching`: the same",
        "files with `batching.enabled: false`) run side by side and are measured cell by cell,",
        "alternating, so a drift in the machine's speed does not favour one. The in-process ceiling",
        "is a bare onnxruntime session called in a loop with all cores to itself: for the demo MLP,",
        "whose graph costs microseconds, the server is bound by HTTP and JSON, not by the model, so",
        "that ratio says little; for the encoder it is the number that matters.",
        "",
        "## Summary",
        "",
        *summary_lines(results, ceilings),
        "",
        "## In-process onnxruntime (the ceiling)",
        "",
        "| model | batch | rows/s | ms per batch |",
        "|---|---:|---:|---:|",
        *(f"| {c.model} | {c.batch_size} | {c.rows_per_s:.0f} | {c.ms_per_batch:.2f} |" for c in ceilings),
        "",
        "## Server",
        "",
        "| model | mode | protocol | clients | req/s | rows/s | p50 ms | p99 ms | mean batch | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.model} | {r.mode} | {r.protocol} | {r.clients} | {r.requests_per_s:.0f} | "
            f"{r.rows_per_s:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.mean_batch_rows:.1f} | "
            f"{r.errors} |"
            for r in results
        ),
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository",
        type=Path,
        default=RESULTS / "repository",
        help="model repository (missing models are trained and exported into it)",
    )
    parser.add_argument("--models", default="fraud,encoder")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--protocols", default="json,binary")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--batch-sizes", default="1,8,16,32,64,128")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk not found: apt-get install wrk")

    models = args.models.split(",")
    clients = [int(c) for c in args.clients.split(",")]
    protocols = args.protocols.split(",")
    started = utc_minute()
    RESULTS.mkdir(parents=True, exist_ok=True)
    prepare_repository(args.repository, models)

    results: list[LoadResult] = []
    ceilings: list[Ceiling] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        off_repo = without_batching(args.repository, models, work / "no-batching")
        for name in models:
            version_dir = latest_version_dir(args.repository, name)
            manifest = ModelManifest.read(version_dir)
            print(f"== {name} v{manifest.version}", flush=True)
            ceilings += inprocess_ceiling(
                version_dir, manifest, min(args.duration, 3.0), [int(b) for b in args.batch_sizes.split(",")]
            )
            with (
                serving(args.repository, RESULTS / f"server-{name}-batching.log") as on,
                serving(off_repo, RESULTS / f"server-{name}-no-batching.log") as off,
            ):
                results += measure(
                    {"batching": on.base_url, "no batching": off.base_url},
                    manifest,
                    protocols,
                    clients,
                    args.duration,
                    work,
                )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, results, ceilings, args, started)
    (RESULTS / "benchmark.json").write_text(
        json.dumps({"results": [asdict(r) for r in results], "ceilings": [asdict(c) for c in ceilings]}, indent=2)
    )
    print("\n".join(["", *summary_lines(results, ceilings), "", f"wrote {args.out}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
