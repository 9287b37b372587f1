"""`hotserve labels MODEL FILE|-`: send ground truth to a server (control path, client side).

The file is JSON lines (or a JSON array), CSV or Parquet, by its extension or `--format` (`-`,
standard input, is JSON lines unless told). It is sent in batches of `--batch` labels through
`POST /v2/models/{name}/labels` (`server/admin_client.py`, token from `HOTSERVE_ADMIN_TOKEN`);
the counts of every batch are summed. A refused batch (a label that does not fit the model's
task) stops with exit 1 and the server's message naming the labels; batches sent before it were
taken, and sending the whole file again is safe (labels are idempotent).
`hotserve labels MODEL --quality` prints the model's live quality report instead.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq

from server.admin_client import AdminClient, AdminError, model_path

DEFAULT_URL = "http://127.0.0.1:8080"
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SUMMED = ("received", "joined", "duplicates", "unknown", "dropped", "written")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("file", nargs="?", help="labels file, or - for standard input")
    parser.add_argument("--format", choices=sorted(FORMATS), help="default: by the file's extension")
    parser.add_argument("--batch", type=int, default=50_000, help="labels per request (default 50000)")
    parser.add_argument("--quality", action="store_true", help="print the model's live quality report instead")
    parser.add_argument("--url", default=os.environ.get("HOTSERVE_URL", DEFAULT_URL))
    parser.add_argument("--timeout-s", dest="timeout_s", type=float, default=60.0)
    parser.add_argument("--json", action="store_true", help="print the server's JSON")


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("HOTSERVE_ADMIN_TOKEN", "").strip()
    if not token:
        print("hotserve labels: set HOTSERVE_ADMIN_TOKEN to an admin token", file=sys.stderr)
        return 2
    client = AdminClient(args.url, token, args.timeout_s)
    try:
        if args.quality:
            doc = client.call("GET", model_path(args.model, "quality"))
            print(json.dumps(doc, indent=2) if args.json else render_quality(doc))
            return 0
        if args.file is None:
            print("hotserve labels: give a FILE (or - for standard input), or --quality", file=sys.stderr)
            return 2
        totals = send(client, args.model, args.file, args.format, args.batch)
    except AdminError as error:
        print(f"hotserve labels: {error}", file=sys.stderr)
        if isinstance(error.doc, dict):
            for item in error.doc.get("refused", [])[:20]:
                print(f"  {item['request_id']} row {item['row']}: {item['problem']}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"hotserve labels: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(totals, indent=2))
    else:
        print(", ".join(f"{name} {totals[name]}" for name in SUMMED))
        if totals["unknown_ids"]:
            shown = ", ".join(f"{u['request_id']}:{u['row']}" for u in totals["unknown_ids"][:10])
            print(f"unknown or expired (first of them): {shown}")
    return 0


def send(client: AdminClient, model: str, file: str, fmt: str | None, batch: int) -> dict[str, Any]:
    """Send every batch of `file`; the summed counts."""
    kind = fmt or ("jsonl" if file == "-" else SUFFIXES.get(Path(file).suffix.lower()))
    if kind is None:
        raise ValueError(f"cannot tell the format of {file!r} from its extension: give --format")
    path = "/v2/models/" + quote(model, safe="") + "/labels"
    totals: dict[str, Any] = {name: 0 for name in SUMMED} | {"unknown_ids": []}
    for body in batches(file, kind, max(1, batch)):
        doc = client.post_bytes(path, body, FORMATS[kind])
        for name in SUMMED:
            totals[name] += int(doc.get(name, 0))
        totals["unknown_ids"] += doc.get("unknown_ids", [])
    return totals


def batches(file: str, kind: str, size: int) -> Iterator[bytes]:
    """The file's labels as request bodies of at most `size` labels each."""
    if kind == "parquet":
        table = pq.read_table(sys.stdin.buffer if file == "-" else file)
        for start in range(0, max(table.num_rows, 1), size):
            sink = io.BytesIO()
            pq.write_table(table.slice(start, size), sink)
            yield sink.getvalue()
        return
    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    if kind == "jsonl" and data.lstrip().startswith(b"["):
        items = json.loads(data)
        for start in range(0, max(len(items), 1), size):
            yield json.dumps(items[start : start + size]).encode()
        return
    lines = data.splitlines(keepends=True)
    header = [lines.pop(0)] if kind == "csv" and lines else []
    for start in range(0, max(len(lines), 1), size):
        yield b"".join(header + lines[start : start + size])


def render_quality(doc: dict[str, Any]) -> str:
    """One line per version: its labelled figures with their count, the estimate, the training figures."""
    out = [f"{doc['model']}: served {doc['since']:.0f}..{doc['until']:.0f} (windows of {doc['window_s']:.0f} s)"]
    for v in doc["versions"]:
        total = v["total"]
        measured = " ".join(f"{k}={val:.4f}" for k, val in sorted(total["metrics"].items())) or "no labels yet"
        estimate = " ".join(f"{k}={val:.4f}" for k, val in sorted(v["estimate"]["metrics"].items())) or "-"
        reference = " ".join(f"{k}={val:.4f}" for k, val in sorted(v["reference"].items())) or "-"
        out.append(f"  version {v['version']} ({v['task']}): {total['labels']} labels: {measured}")
        out.append(f"    estimate over {v['estimate']['rows']} served rows: {estimate}; training: {reference}")
    return "\n".join(out)
