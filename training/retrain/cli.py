"""`hotserve retrain MODEL`: retrain the production version on captured rows and their labels,
then release the challenger if it beats the champion (torch is imported only in `run`).

Exit codes: 0 promoted, 1 rolled back, 2 inconclusive, 3 the release could not start (those of
`hotserve release`); 4 the challenger was not better (nothing exported); 5 too few labelled rows
(with the counts); 6 any other failure.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.admin_cli import DEFAULT_URL

DEFAULT_HOURS = 168.0


def _when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time (2026-05-01T12:00:00Z), got {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def replica_urls(target: str) -> list[str]:
    """`http://ADDRESS:PORT` for every address `HOST` of `HOST:PORT` resolves to (every pod behind a
    headless Service); ValueError when it resolves to none."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--rescan-dns {target!r}: expected HOST:PORT")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as error:
        raise ValueError(f"--rescan-dns {target!r}: {error}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    return [f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model to retrain (its production version is the champion)")
    data = parser.add_argument_group("data: captured rows and labels")
    data.add_argument(
        "--sink",
        default=os.environ.get("HOTSERVE_CAPTURE_SINK", ""),
        help="capture sink: a directory or s3://bucket/prefix (default HOTSERVE_CAPTURE_SINK; S3 credentials "
        "from AWS_*, an S3-compatible endpoint from HOTSERVE_CAPTURE_S3_ENDPOINT)",
    )
    data.add_argument("--since", type=_when, help="first answer time of the window (ISO 8601; default: --hours ago)")
    data.add_argument("--until", type=_when, help="end of the window, exclusive (default: now)")
    data.add_argument(
        "--hours",
        type=float,
        default=DEFAULT_HOURS,
        help="window length when --since is not given (default %(default)s)",
    )
    data.add_argument(
        "--holdout",
        type=_fraction,
        default=0.2,
        help="newest share of the rows held out to compare on (default %(default)s)",
    )
    data.add_argument("--min-rows", type=_positive, default=1000, help="labelled rows needed (default %(default)s)")
    data.add_argument(
        "--min-class-rows",
        type=_positive,
        default=20,
        help="classifiers: rows of each class needed in the training and in the held-out rows (default %(default)s)",
    )
    model = parser.add_argument_group("training")
    model.add_argument(
        "--repository", type=Path, default=Path(os.environ.get("HOTSERVE_MODEL_REPOSITORY", "model_repository"))
    )
    model.add_argument(
        "--checkpoints", type=Path, default=Path("checkpoints"), help="checkpoint root (default ./checkpoints)"
    )
    model.add_argument("--fresh", action="store_true", help="train from new weights instead of the champion's")
    model.add_argument("--epochs", type=_positive, help="epochs (default: the champion's)")
    model.add_argument(
        "--champion", type=_positive, metavar="VERSION", help="start from and beat this version (default: production's)"
    )
    judge = parser.add_argument_group("comparison on the held-out rows")
    judge.add_argument(
        "--metric",
        help="binary auc|accuracy|log_loss, multiclass accuracy|macro_f1|log_loss, "
        "regression rmse|mae|r2 (default auc, macro_f1, rmse)",
    )
    judge.add_argument(
        "--min-improvement", type=float, default=0.0, help="the improvement's lower bound must exceed this (default 0)"
    )
    judge.add_argument("--confidence", type=float, default=0.95, help="of the one-sided bound (default %(default)s)")
    release = parser.add_argument_group("release")
    release.add_argument("--policy", type=Path, help="release policy YAML for `hotserve release`")
    release.add_argument("--no-release", action="store_true", help="export only; exit 0 without a release")
    release.add_argument("--url", default=os.environ.get("HOTSERVE_URL", DEFAULT_URL), help="server base URL")
    release.add_argument(
        "--rescan-url",
        action="append",
        default=[],
        metavar="URL",
        help="a replica to rescan the repository on once the version is published (repeatable; default: --url); "
        "replicas that are not told find it at their HOTSERVE_REPOSITORY_POLL_INTERVAL_S",
    )
    release.add_argument(
        "--rescan-dns",
        metavar="HOST:PORT",
        help="rescan every address HOST resolves to (a headless Service: every server pod), as --rescan-url",
    )
    release.add_argument("--poll-s", type=float, default=1.0, help="how often the release is read")
    release.add_argument("--timeout-s", type=float, default=60.0, help="how long one admin call waits")


def run(args: argparse.Namespace) -> int:
    from exporters.errors import ExportError
    from server.admin_client import AdminClient, AdminError
    from training.checkpoints import CheckpointError
    from training.retrain.champion import ChampionError
    from training.retrain.run import FAILED, Refused, RetrainRequest, retrain
    from training.retrain.table import TableError, Window
    from training.trainer import TrainingError

    until = args.until or datetime.now(UTC)
    since = args.since or until - timedelta(hours=args.hours)
    token = os.environ.get("HOTSERVE_ADMIN_TOKEN", "").strip()
    client = AdminClient(args.url, token, args.timeout_s) if token else None
    try:
        request = RetrainRequest(
            model=args.model,
            sink=args.sink,
            window=Window(since, until),
            repository=args.repository,
            checkpoints=args.checkpoints,
            holdout=args.holdout,
            fresh=args.fresh,
            epochs=args.epochs,
            metric=args.metric,
            min_improvement=args.min_improvement,
            confidence=args.confidence,
            min_rows=args.min_rows,
            min_class_rows=args.min_class_rows,
            champion=args.champion,
            release=not args.no_release,
            policy=args.policy,
            url=args.url,
            poll_s=args.poll_s,
            timeout_s=args.timeout_s,
        )

        def rescan() -> list[AdminClient]:  # resolved once the version is published: pods come and go
            urls = list(args.rescan_url) + (replica_urls(args.rescan_dns) if args.rescan_dns else [])
            return [AdminClient(url, token, args.timeout_s) for url in urls]

        return retrain(request, client, lambda line: print(line, flush=True), rescan)
    except Refused as refusal:
        print(f"hotserve retrain: {refusal}", file=sys.stderr)
        return refusal.code
    except (
        AdminError,
        ChampionError,
        CheckpointError,
        ExportError,
        TableError,
        TrainingError,
        ValueError,
        OSError,
    ) as error:
        print(f"hotserve retrain: error: {error}", file=sys.stderr)
        return FAILED
    except Exception:  # 1 would read as "rolled back": any other failure is FAILED, with its traceback
        traceback.print_exc()
        return FAILED
