"""REST JSON vs REST binary vs gRPC raw contents: the same model, the same concurrency, one server.

    python -m load_tests.grpc_benchmark                       # 3 rounds x 3 cells x 5 s, 32 connections
    python -m load_tests.grpc_benchmark --duration 3 --rounds 2 --clients 16

One `hotserve serve` with `--grpc-port`, one model: `wide`, x [n, 1024] FP32 -> x @ W [n, 8] (the
1,024-element tensor of MLServer's gRPC-vs-REST figure), batching on. Every request is one row.
The load comes from one generator for every cell, h2load (nghttp2-client: `apt-get install
nghttp2-client`), a C client: HTTP/1.1 keep-alive for REST (`--h1`), HTTP/2 for gRPC, one request
in flight per connection. Cells alternate within each round, so drift of a shared machine hits
them alike. Latency percentiles come from h2load's per-request log. gRPC answers HTTP 200 even for
an error, so the server's own `hotserve_requests_total` must count every gRPC request as 200 (but
the 499s of the calls in flight when h2load stops).
"""

from __future__ import annotations

import argparse
import json
import re
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
from onnx import TensorProto, helper, numpy_helper

from load_tests.benchmark import RESULTS
from load_tests.server_process import free_port, start_server
from server.contract.manifest import ONNX_FILENAME, BatchingPolicy, Lineage, ModelManifest, TensorSpec, sha256_file
from server.protocol.proto import inference_pb2 as pb

MODEL = "wide"
FEATURES = 1024
OUTPUTS = 8
CELLS = ("REST JSON", "REST binary", "gRPC raw")
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Cell:
    round: int
    cell: str
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def write_repository(root: Path) -> None:
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


def bodies(row: np.ndarray) -> dict[str, tuple[bytes, list[str]]]:
    """Each cell's request body and headers: the same row, asked back as the cell's encoding."""
    json_body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": row.tolist()}]}
    ).encode()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, FEATURES],
                    "parameters": {"binary_data_size": row.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[1, FEATURES])
    request.raw_input_contents.append(row.tobytes())
    message = request.SerializeToString()
    return {
        "REST JSON": (json_body, ["content-type: application/json"]),
        "REST binary": (
            header + row.tobytes(),
            ["content-type: application/octet-stream", f"inference-header-content-length: {len(header)}"],
        ),
        # gRPC's length-prefixed message: a compressed flag (0) and the big-endian length.
        "gRPC raw": (struct.pack(">BI", 0, len(message)) + message, ["content-type: application/grpc", "te: trailers"]),
    }


def check_answers(url: str, grpc_address: str, row: np.ndarray, cells: dict[str, tuple[bytes, list[str]]]) -> None:
    """Each body, sent once, gets the right answer (what the load then repeats)."""
    expected = row @ (np.random.default_rng(1).normal(size=(FEATURES, OUTPUTS)).astype(np.float32) / 32)
    for cell in ("REST JSON", "REST binary"):
        body, headers = cells[cell]
        request = urllib.request.Request(
            f"{url}/v2/models/{MODEL}/infer", data=body, headers=dict(h.split(": ", 1) for h in headers)
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            content = response.read()
            length = response.headers.get("inference-header-content-length")
        if length is None:
            got = np.array(json.loads(content)["outputs"][0]["data"], dtype=np.float32)
        else:
            got = np.frombuffer(content[int(length) :], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    with grpc.insecure_channel(grpc_address) as channel:
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


def grpc_codes(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    codes: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(
            r'hotserve_requests_total\{code="(\d+)",model="wide",protocol="grpc",version="1"\} (\S+)', line
        )
        if match:
            codes[match.group(1)] = float(match.group(2))
    return codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per cell")
    parser.add_argument("--clients", type=int, default=32, help="connections, one request in flight each")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    row = np.random.default_rng(0).normal(size=FEATURES).astype(np.float32)
    cells = bodies(row)
    results: list[Cell] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_repository(work / "repository")
        grpc_port = free_port()
        server = start_server(
            work / "repository",
            RESULTS / "server-grpc.log",
            flags=["--grpc-port", str(grpc_port)],
            env={"HOTSERVE_LOG_LEVEL": "warning", "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider"},
            startup_timeout_s=120,
        )
        with server:
            url = server.base_url
            check_answers(url, f"127.0.0.1:{grpc_port}", row, cells)
            targets = {
                "REST JSON": (f"{url}/v2/models/{MODEL}/infer", True),
                "REST binary": (f"{url}/v2/models/{MODEL}/infer", True),
                "gRPC raw": (f"http://127.0.0.1:{grpc_port}{GRPC_PATH}", False),
            }
            for round_ in range(1, args.rounds + 1):
                for cell in CELLS:
                    target, h1 = targets[cell]
                    before = grpc_codes(url)
                    done, seconds, latencies, failed = run_h2load(
                        target, *cells[cell], h1, args.clients, args.duration, work
                    )
                    after = grpc_codes(url)
                    # 499: streams h2load resets when the time is up (REST loses those connections alike)
                    errors = failed + int(
                        sum(after.get(c, 0) - before.get(c, 0) for c in after if c not in ("200", "499"))
                    )
                    quantiles = statistics.quantiles(latencies, n=100)
                    results.append(Cell(round_, cell, done, done / seconds, quantiles[49], quantiles[98], errors))
                    print(json.dumps(asdict(results[-1])), flush=True)
    print(
        f"\ncell          req/s   p50 ms  p99 ms  errors  (median of {args.rounds} rounds, {args.clients} connections)"
    )
    for cell in CELLS:
        rows = [r for r in results if r.cell == cell]
        print(
            f"{cell:12s} {statistics.median(r.requests_per_s for r in rows):7.0f} "
            f"{statistics.median(r.p50_ms for r in rows):7.2f} {statistics.median(r.p99_ms for r in rows):7.2f} "
            f"{sum(r.errors for r in rows):7d}"
        )
    (RESULTS / "grpc_benchmark.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
