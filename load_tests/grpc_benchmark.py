"""REST JSON vs REST binary vs gRPC raw contents: the same model, the same concurrency, one server.

    python -m load_tests.grpc_benchmark                       # 3 rounds x 3 cells x 5 s, 32 connections
    python -m load_tests.grpc_benchmark --duration 3 --rounds 2 --clients 16
    python -m load_tests.grpc_benchmark --model demo --aio    # the demo MLP; and a grpc.aio server's cell

One `hotserve serve` with `--grpc-port` (its default transport, hotserve's own HTTP/2 server), one
model: `wide`, x [n, 1024] FP32 -> x @ W [n, 8] (the 1,024-element tensor of MLServer's
gRPC-vs-REST figure), or with `--model demo` the demo MLP (`fraud`: 9 features -> a probability,
trained and exported into load_tests/results/ when missing), batching on. Every request is one
row. `--aio` adds a cell served by a second, otherwise idle server on the grpc.aio transport
(`HOTSERVE_GRPC_SERVER=grpcio`), alternated with the others.
The load comes from one generator for every cell, h2load (nghttp2-client: `apt-get install
nghttp2-client`), a C client: HTTP/1.1 keep-alive for REST (`--h1`), HTTP/2 for gRPC, one request
in flight per connection. Cells alternate within each round, so drift of a shared machine hits
them alike. Latency percentiles come from h2load's per-request log. gRPC answers HTTP 200 even for
an error, so the server's own `hotserve_requests_total` must count every gRPC request as 200 (but
the 499s of the calls in flight when h2load stops).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from load_tests.benchmark import RESULTS, prepare_repository
from load_tests.server_process import ServerProcess, free_port, start_server
from server.contract.manifest import ONNX_FILENAME, BatchingPolicy, Lineage, ModelManifest, TensorSpec, sha256_file
from server.protocol.proto import inference_pb2 as pb

MODEL = "wide"
FEATURES = 1024
OUTPUTS = 8
DEMO = "fraud"
CELLS = ("REST JSON", "REST binary", "gRPC raw")
AIO_CELL = "gRPC raw (grpc.aio)"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Served:
    """The benchmark's model: its name, version, input and its width."""

    name: str
    version: int
    input: str
    features: int
    onnx: Path


@dataclass
class Cell:
    round: int
    cell: str
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def write_repository(root: Path) -> Served:
    weights = np.random.default_rng(1).normal(size=(FEATURES, OUTPUTS)).astype(np.float32) / 32
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", OUTPUTS])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = root / MODEL / "1"
    folder.mkdir(parents=True)
    onnx.save(model, folder / ONNX_FILENAME)
    ModelManifest(
        name=MODEL,
        version=1,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, FEATURES])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, OUTPUTS])],
        batching=BatchingPolicy(max_batch_size=64, max_queue_size=1024),
        lineage=Lineage(architecture="matmul"),
        onnx_sha256=sha256_file(folder / ONNX_FILENAME),
    ).write(folder)
    return Served(MODEL, 1, "x", FEATURES, folder / ONNX_FILENAME)


def demo_repository(root: Path) -> Served:
    """The demo MLP's first version, copied from the load tests' repository (trained when missing)."""
    prepare_repository(RESULTS / "repository", [DEMO])
    source = RESULTS / "repository" / DEMO / "1"
    shutil.copytree(source, root / DEMO / "1")
    manifest = ModelManifest.read(root / DEMO / "1")
    spec = manifest.inputs[0]
    return Served(DEMO, 1, spec.name, spec.shape[-1], root / DEMO / "1" / ONNX_FILENAME)


def bodies(served: Served, row: np.ndarray) -> dict[str, tuple[bytes, list[str]]]:
    """Each cell's request body and headers: the same row, asked back as the cell's encoding."""
    shape = [1, served.features]
    json_body = json.dumps(
        {"inputs": [{"name": served.input, "datatype": "FP32", "shape": shape, "data": row.tolist()}]}
    ).encode()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": served.input,
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": row.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    request = pb.ModelInferRequest(model_name=served.name)
    request.inputs.add(name=served.input, datatype="FP32", shape=shape)
    request.raw_input_contents.append(row.tobytes())
    message = request.SerializeToString()
    grpc_body = struct.pack(">BI", 0, len(message)) + message
    return {
        "REST JSON": (json_body, ["content-type: application/json"]),
        "REST binary": (
            header + row.tobytes(),
            ["content-type: application/octet-stream", f"inference-header-content-length: {len(header)}"],
        ),
        # gRPC's length-prefixed message: a compressed flag (0) and the big-endian length.
        "gRPC raw": (grpc_body, ["content-type: application/grpc", "te: trailers"]),
        AIO_CELL: (grpc_body, ["content-type: application/grpc", "te: trailers"]),
    }


def check_answers(
    url: str, grpc_addresses: list[str], served: Served, row: np.ndarray, cells: dict[str, tuple[bytes, list[str]]]
) -> None:
    """Each body, sent once, gets the right answer (what the load then repeats)."""
    session = ort.InferenceSession(str(served.onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {served.input: row[None, :]})[0].ravel()
    for cell in ("REST JSON", "REST binary"):
        body, headers = cells[cell]
        request = urllib.request.Request(
            f"{url}/v2/models/{served.name}/infer", data=body, headers=dict(h.split(": ", 1) for h in headers)
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            content = response.read()
            length = response.headers.get("inference-header-content-length")
        if length is None:
            got = np.array(json.loads(content)["outputs"][0]["data"], dtype=np.float32)
        else:
            got = np.frombuffer(content[int(length) :], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    for address in grpc_addresses:
        with grpc.insecure_channel(address) as channel:
            infer: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse] = channel.unary_unary(
                GRPC_PATH, response_deserializer=pb.ModelInferResponse.FromString
            )
            answer = infer(cells["gRPC raw"][0][5:], timeout=30)
            np.testing.assert_allclose(
                np.frombuffer(answer.raw_output_contents[0], np.float32), expected, rtol=1e-4, atol=1e-5
            )


def run_h2load(
    url: str, body: bytes, headers: list[str], h1: bool, clients: int, duration_s: int, work: Path
) -> tuple[int, float, list[float], int]:
    """(requests, seconds, per-request latencies in ms, failed requests)."""
    body_file, log_file = work / "body.bin", work / "h2load.log"
    body_file.write_bytes(body)
    log_file.unlink(missing_ok=True)
    command = ["h2load", "-c", str(clients), "-m", "1", "-t", "1", "-D", str(duration_s), "--warm-up-time", "1"]
    command += ["-d", str(body_file), f"--log-file={log_file}", *(a for h in headers for a in ("-H", h))]
    command += ["--h1", url] if h1 else [url]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    requests = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    if finished is None or requests is None:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies = [int(line.split("\t")[2]) / 1000 for line in log_file.read_text().splitlines() if line.strip()]
    return int(requests.group(1)), seconds, latencies, int(requests.group(3)) + int(requests.group(4))


def grpc_codes(url: str, served: Served) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    codes: dict[str, float] = {}
    pattern = re.compile(
        rf'hotserve_requests_total\{{code="(\d+)",model="{served.name}",protocol="grpc",version="{served.version}"\}} (\S+)'
    )
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            codes[match.group(1)] = float(match.group(2))
    return codes


def serve(repository: Path, log: str, grpc_port: int, env: dict[str, str]) -> ServerProcess:
    """`hotserve serve` over `repository` with gRPC on `grpc_port`, its log in load_tests/results/."""
    return start_server(
        repository, RESULTS / log, flags=["--grpc-port", str(grpc_port)], env=env, startup_timeout_s=120
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per cell")
    parser.add_argument("--clients", type=int, default=32, help="connections, one request in flight each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=("wide", "demo"), default="wide", help="wide (1,024 FP32) or the demo MLP")
    parser.add_argument("--aio", action="store_true", help="add a cell on a second server with the grpc.aio transport")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = (*CELLS, AIO_CELL) if args.aio else CELLS
    results: list[Cell] = []
    env = {"HOTSERVE_LOG_LEVEL": "warning", "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        served = write_repository(work / "repository") if args.model == "wide" else demo_repository(work / "repository")
        row = np.random.default_rng(0).normal(size=served.features).astype(np.float32)
        cells = bodies(served, row)
        grpc_port = free_port()
        server = stack.enter_context(serve(work / "repository", "server-grpc.log", grpc_port, env))
        url = server.base_url
        targets = {
            "REST JSON": (url, f"{url}/v2/models/{served.name}/infer", True),
            "REST binary": (url, f"{url}/v2/models/{served.name}/infer", True),
            "gRPC raw": (url, f"http://127.0.0.1:{grpc_port}{GRPC_PATH}", False),
        }
        addresses = [f"127.0.0.1:{grpc_port}"]
        if args.aio:
            aio_port = free_port()
            aio_env = {**env, "HOTSERVE_GRPC_SERVER": "grpcio"}
            aio = stack.enter_context(serve(work / "repository", "server-grpc-aio.log", aio_port, aio_env))
            targets[AIO_CELL] = (aio.base_url, f"http://127.0.0.1:{aio_port}{GRPC_PATH}", False)
            addresses.append(f"127.0.0.1:{aio_port}")
        check_answers(url, addresses, served, row, cells)
        for round_ in range(1, args.rounds + 1):
            for cell in names:
                base, target, h1 = targets[cell]
                before = grpc_codes(base, served)
                done, seconds, latencies, failed = run_h2load(
                    target, *cells[cell], h1, args.clients, args.duration, work
                )
                after = grpc_codes(base, served)
                # 499: streams h2load resets when the time is up (REST loses those connections alike)
                errors = failed + int(sum(after.get(c, 0) - before.get(c, 0) for c in after if c not in ("200", "499")))
                quantiles = statistics.quantiles(latencies, n=100)
                results.append(Cell(round_, cell, done, done / seconds, quantiles[49], quantiles[98], errors))
                print(json.dumps(asdict(results[-1])), flush=True)
    print(
        f"\ncell                 req/s   p50 ms  p99 ms  errors  "
        f"(model {served.name}, median of {args.rounds} rounds, {args.clients} connections)"
    )
    for cell in names:
        rows = [r for r in results if r.cell == cell]
        print(
            f"{cell:19s} {statistics.median(r.requests_per_s for r in rows):7.0f} "
            f"{statistics.median(r.p50_ms for r in rows):7.2f} {statistics.median(r.p99_ms for r in rows):7.2f} "
            f"{sum(r.errors for r in rows):7d}"
        )
    (RESULTS / f"grpc_benchmark_{served.name}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
