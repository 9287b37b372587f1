"""`hotserve features materialize`: load entity features from a table into the online store.

Control path, offline: table (CSV, Parquet, `demo:fraud`) -> rows checked against a feature
view from the model repository (`table.py`) -> Redis (`HOTSERVE_REDIS_URL`, pipelined chunks)
or a running server's store (`--server`, through `/admin/features/...`, bearer token from
`HOTSERVE_ADMIN_TOKEN`). Idempotent: the same table writes the same keys and values (event
times come from a column, `--event-time`, or the file's modification time). Reports rows
written and each rejected row with its reason; the others are still written.

Exit codes: 0 every row written; 4 some rows rejected (the rest written); 1 nothing could be
done (unreadable table, unknown view, store or server unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from demos import is_demo
from server.admin_client import AdminClient, AdminError
from server.contract.manifest import FeatureView
from server.errors import FeatureStoreUnavailable
from server.features.redis_store import RedisFeatureStore, redacted
from server.features.service import repository_views
from server.features.store import EntityWrite
from server.features.table import TableError, check_columns, read_table, table_rows
from server.features.values import parse_event_time
from server.settings import Settings

EXIT_FAILED = 1
EXIT_REJECTED = 4
SHOWN_REJECTIONS = 20


class MaterializeError(Exception):
    """Nothing could be written; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="features_command", required=True)
    m = sub.add_parser(
        "materialize",
        help="load entity features from a table into the online store",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    m.add_argument("source", help="a .csv or .parquet table, or demo:fraud")
    m.add_argument(
        "--model-repository",
        type=Path,
        default=Path(
            os.environ.get("HOTSERVE_MODEL_REPOSITORY") or str(Settings.model_fields["model_repository"].default)
        ),
        help="repository whose model.json files declare the feature views "
        "(default: $HOTSERVE_MODEL_REPOSITORY or %(default)s)",
    )
    m.add_argument("--view", help="feature view as NAME:vVERSION (default: the repository's only view)")
    m.add_argument(
        "--server",
        help="base URL of a running hotserve to write through (its embedded "
        "store or its Redis); default: Redis at $HOTSERVE_REDIS_URL",
    )
    m.add_argument("--event-time-column", help="column holding each row's event time (Unix seconds or ISO-8601)")
    m.add_argument(
        "--event-time",
        help="event time of every row when the table has no such column "
        "(default: the file's modification time; now for demo tables)",
    )
    m.add_argument("--ttl-s", type=float, default=None, help="expire the written keys after this long (default: never)")
    m.add_argument("--chunk-rows", type=int, default=1000, help="rows per pipelined write (default %(default)s)")
    m.add_argument("--rows", type=int, default=None, help="rows of a demo table (its default if unset)")
    m.add_argument("--seed", type=int, default=0, help="seed of a demo table (default %(default)s)")
    m.add_argument("--timeout-s", type=float, default=10.0, help="per-chunk write timeout (default %(default)s)")


def pick_view(views: dict[str, FeatureView], wanted: str | None, root: Path) -> FeatureView:
    if wanted is not None:
        if wanted not in views:
            raise MaterializeError(
                f"feature view {wanted!r} is not declared in {root} (known: {sorted(views) or 'none'})"
            )
        view = views[wanted]
    elif len(views) != 1:
        raise MaterializeError(
            f"{root} declares {len(views)} feature views {sorted(views)}; choose one with --view NAME:vVERSION"
        )
    else:
        view = next(iter(views.values()))
    if view.feast is not None:
        raise MaterializeError(
            f"feature view {view.label} reads Feast project {view.feast.project!r}: "
            "materialize it with `feast materialize`, not hotserve"
        )
    return view


def default_event_time(args: argparse.Namespace) -> float:
    if args.event_time is not None:
        try:
            return parse_event_time(args.event_time)
        except ValueError as exc:
            raise MaterializeError(f"--event-time: {exc}") from None
    if is_demo(args.source):
        return time.time()
    return Path(args.source).stat().st_mtime


class Progress:
    """A one-line progress bar on stderr (a line per update when it is not a terminal)."""

    def __init__(self, total: int, label: str, out: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()

    def advance(self, rows: int) -> None:
        self.done += rows
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        line = f"{self.label} [{bar:<30}] {self.done}/{self.total} entities"
        self.out.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.done >= self.total:
            self.out.write("\n")
        self.out.flush()


async def write_redis(
    url: str,
    view: FeatureView,
    writes: list[EntityWrite],
    ttl_s: float | None,
    chunk_rows: int,
    timeout_s: float,
    progress: Progress,
) -> tuple[int, list[str]]:
    store = RedisFeatureStore(url, timeout_s, write_timeout_s=timeout_s)
    written = 0
    try:
        for start in range(0, len(writes), chunk_rows):
            chunk = writes[start : start + chunk_rows]
            written += await store.put_many(chunk, view, ttl_s)
            progress.advance(len(chunk))
    except FeatureStoreUnavailable as exc:
        raise MaterializeError(f"{exc.message} after {written} entities") from None
    finally:
        await store.close()
    return written, []


def write_server(
    base_url: str,
    view: FeatureView,
    writes: list[EntityWrite],
    ttl_s: float | None,
    chunk_rows: int,
    timeout_s: float,
    progress: Progress,
) -> tuple[int, list[str]]:
    client = AdminClient(base_url, os.environ.get("HOTSERVE_ADMIN_TOKEN", ""), timeout_s)
    path = f"/admin/features/views/{view.name}/versions/{view.version}/rows"
    url = client.url + path
    written = 0
    rejected: list[str] = []
    for start in range(0, len(writes), chunk_rows):
        chunk = writes[start : start + chunk_rows]
        body = {
            "ttl_s": ttl_s,
            "rows": [{"entity": w.entity, "event_time": w.event_time, "values": dict(w.values)} for w in chunk],
        }
        try:
            status, answer = client.request("POST", path, body)
        except AdminError as exc:
            raise MaterializeError(f"{url}: {exc} after {written} entities") from None
        if status != 200 or not isinstance(answer, dict):
            detail = json.dumps(answer) if answer is not None else "no answer"
            raise MaterializeError(
                f"{url}: HTTP {status} {detail}{_refusal_hint(client, status)} after {written} entities"
            )
        written += int(answer["written"])
        rejected += [f"entity {chunk[r['index']].entity!r}: {r['reason']}" for r in answer["rejected"]]
        progress.advance(len(chunk))
    return written, rejected


def _refusal_hint(client: AdminClient, status: int) -> str:
    """Why the server's admin API refused the rows, when it is about the token or the API being off.

    A server without admin tokens has no /admin routes: every one is 404, `GET /admin/models`
    included, which a server with the API on answers 401, 403 or 200."""
    if status == 401:
        return " (no admin token sent: set HOTSERVE_ADMIN_TOKEN to one of the server's admin tokens)"
    if status == 403:
        return " (HOTSERVE_ADMIN_TOKEN is not one of the server's admin tokens)"
    if status == 404:
        try:
            probe, _ = client.request("GET", "/admin/models")
        except AdminError:
            return ""
        if probe == 404:
            return (
                " (the server's admin API is off: start it with HOTSERVE_ADMIN_TOKEN, HOTSERVE_ADMIN_TOKENS or "
                "HOTSERVE_ADMIN_TOKENS_FILE set, or fill its store at start with --feature-table TABLE)"
            )
    return ""


def materialize(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    views = repository_views(args.model_repository)
    view = pick_view(views, args.view, args.model_repository)
    redis_url = os.environ.get("HOTSERVE_REDIS_URL", "")
    if args.server is None and not redis_url:
        raise MaterializeError("nowhere to write: give --server URL (a running hotserve) or set HOTSERVE_REDIS_URL")
    try:
        columns, rows = read_table(args.source, args.rows, args.seed)
        check_columns(view, columns, args.event_time_column, args.source)
        stamp = None if args.event_time_column else default_event_time(args)
        checked = table_rows(view, rows, args.event_time_column, stamp)
    except (TableError, OSError) as exc:
        raise MaterializeError(str(exc)) from None
    target = args.server if args.server is not None else redacted(redis_url)
    progress = Progress(len(checked.writes), f"{view.label} -> {target}")
    if args.server is not None:
        written, refused = write_server(
            args.server, view, checked.writes, args.ttl_s, args.chunk_rows, args.timeout_s, progress
        )
    else:
        written, refused = asyncio.run(
            write_redis(redis_url, view, checked.writes, args.ttl_s, args.chunk_rows, args.timeout_s, progress)
        )
    problems = [f"row {number}: {reason}" for number, reason in checked.rejected] + refused
    ttl = "no expiry" if args.ttl_s is None else f"ttl {args.ttl_s:g} s"
    print(
        f"materialized feature view {view.label} from {args.source} into {target}: "
        f"{written} entities written ({checked.read} rows read, {len(problems)} rejected; {ttl})",
        file=out,
    )
    for problem in problems[:SHOWN_REJECTIONS]:
        print(f"  rejected {problem}", file=out)
    if len(problems) > SHOWN_REJECTIONS:
        print(f"  ... and {len(problems) - SHOWN_REJECTIONS} more rejected rows", file=out)
    return EXIT_REJECTED if problems else 0


def run(args: argparse.Namespace) -> int:
    try:
        return materialize(args)
    except MaterializeError as exc:
        print(f"hotserve features materialize: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
