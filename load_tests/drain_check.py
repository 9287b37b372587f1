"""SIGTERM under load: is every request a client has sent answered (200, or 503 once draining)?

    python -m load_tests.drain_check                      # hotserve serve (uvicorn)
    python -m load_tests.drain_check --server granian     # hotserve's app on Granian (stack_apps)

Starts the server on the demo fraud MLP, opens `--connections` keep-alive connections that post
the v2 JSON body one request after another without pause, sends the server SIGTERM after
`--after-s`, and counts what each request got: an answer (by status), or nothing (the connection
closed after the request was written: a dropped request). A connection ends when the server closes
it. Prints the counts and the server's exit code; exits 1 when a request was dropped or the server
did not exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from load_tests.benchmark import RESULTS, bodies, latest_version_dir, prepare_repository
from load_tests.server_process import SERVE, start_server
from server.contract.manifest import ModelManifest

MODEL = "fraud"
DROPPED = "sent, no answer"
GRANIAN = (sys.executable, "-m", "load_tests.stack_apps", "hotserve", "--server", "granian")


async def client(port: int, request: bytes, counts: collections.Counter[str]) -> None:
    """One keep-alive connection posting `request` until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                partial = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
                counts[DROPPED if not partial else "sent, part of an answer"] += 1
                return
            lines = head.lower().split(b"\r\n")
            length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
            await reader.readexactly(length)
            counts[f"answered {int(lines[0].split()[1])}"] += 1
            if b"connection: close" in lines:
                counts["connections closed after an answer"] += 1
                return
    finally:
        writer.close()


async def load_and_terminate(
    port: int, terminate: Callable[[], None], request: bytes, connections: int, after_s: float
) -> tuple[str, int]:
    """Connections posting `request`, `terminate()` after `after_s`: (the counts, how many dropped)."""
    counts: collections.Counter[str] = collections.Counter()
    tasks = [asyncio.create_task(client(port, request, counts)) for _ in range(connections)]
    await asyncio.sleep(after_s)
    signalled = time.monotonic()
    terminate()
    await asyncio.wait(tasks, timeout=60)
    ended = time.monotonic() - signalled
    return f"{dict(sorted(counts.items()))}; connections ended {ended:.2f} s after SIGTERM", counts[DROPPED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument("--repository", type=Path, default=RESULTS / "repository")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--after-s", type=float, default=1.5, help="seconds of load before SIGTERM")
    args = parser.parse_args(argv)
    prepare_repository(args.repository, [MODEL])
    body = bodies(ModelManifest.read(latest_version_dir(args.repository, MODEL)), 1)["json"][0]
    request = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    command = SERVE if args.server == "uvicorn" else GRANIAN
    server = start_server(
        args.repository, RESULTS / f"drain-{args.server}.log", env={"HOTSERVE_LOG_LEVEL": "info"}, command=command
    )
    try:
        line, dropped = asyncio.run(
            load_and_terminate(
                server.port, lambda: server.process.send_signal(signal.SIGTERM), request, args.connections, args.after_s
            )
        )
        code = server.process.wait(timeout=60)
    finally:
        server.stop()
    print(f"{args.server}: {line}; server exit code {code}")
    return 1 if dropped or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
