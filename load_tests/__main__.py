"""`python -m load_tests`: locust load runs against hotserve, with the SLO gate.

    python -m load_tests run                      # demo MLP, mixed traffic + operator, 60 s, report + plots + gate
    python -m load_tests run --url http://127.0.0.1:8080 --no-operator --duration 30
    python -m load_tests capacity                 # step load per scenario, demo MLP and encoder
    python -m load_tests check load_tests/results/run/summary.json --slo my-slo.yaml

Needs the `load` extra (locust, matplotlib, pyyaml); starting a server on the demo models
trains and exports them when missing (the `train` extra).

Exit status: 0 every SLO passed (or none was set), 1 an SLO failed, 2 usage or a bug in the
load test's own code, 3 the SLO file is missing or invalid, 4 the operator would not leave the
model's control state as it found it (a canary, traffic split or shadow it already had, or no
production alias): the message says what to clear, or run with --no-operator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("results")
SLO_DIR = Path(__file__).with_name("slo")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repository",
        type=Path,
        default=RESULTS / "repository",
        help="model repository to serve (demo models missing from it are trained and exported)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="HOTSERVE_NAME=VALUE",
        help="a setting for the server this command starts (repeatable), e.g. HOTSERVE_DRIFT_ENABLED=false",
    )
    parser.add_argument(
        "--entities",
        default="demo:fraud",
        help="entity table the feature store is filled from and v1 records draw their "
        "entities from (CSV, Parquet or demo:fraud)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m load_tests", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="a bounded mixed load (with the operator), report, plots, SLO gate")
    _server_options(run)
    run.add_argument(
        "--url", help="target this server instead of starting one (the operator reads HOTSERVE_ADMIN_TOKEN)"
    )
    run.add_argument("--model", default="fraud")
    run.add_argument("--users", type=int, default=32, help="concurrent users, the operator included")
    run.add_argument("--spawn-rate", type=_positive, default=32.0, help="users started per second")
    run.add_argument("--duration", type=_positive, default=60.0, help="seconds")
    run.add_argument(
        "--rate-per-user",
        type=float,
        default=25.0,
        help="requests per second each user paces itself to (0: no pause at all)",
    )
    run.add_argument(
        "--mix",
        default="v2_json=4,v2_binary=3,v1_features=3",
        help="scenario=weight,...: v2_json, v2_binary, v1_features",
    )
    run.add_argument("--rows", type=int, default=1, help="rows (records) per request")
    run.add_argument(
        "--unknown-share",
        type=float,
        default=0.05,
        help="share of v1 requests naming an entity the store does not hold (answered 404)",
    )
    run.add_argument(
        "--operator",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="an operator loads, canaries, shadows, promotes and rolls back a version during the run",
    )
    run.add_argument("--operator-interval", type=_positive, default=5.0, help="seconds between the operator's steps")
    run.add_argument(
        "--promotion-requirements",
        default='{"min_requests": 100, "min_agreement": 0.99, "max_p99_ratio": 2.0, "max_error_ratio": 0.01}',
        help="JSON: what promotion asks of the candidate",
    )
    run.add_argument("--slo", type=Path, help="SLO file (YAML or JSON); default load_tests/slo/<model>.yaml if any")
    run.add_argument("--out", type=Path, default=RESULTS / "run", help="CSV, HTML, summary.json and plots go here")
    run.add_argument(
        "--docs",
        type=Path,
        help="also write the run's section of this markdown file (e.g. docs/benchmarks.md), its plots beside it",
    )

    cap = commands.add_parser("capacity", help="step load: highest rate meeting each scenario's p99 SLO")
    _server_options(cap)
    cap.add_argument("--models", default="fraud,encoder")
    cap.add_argument("--scenarios", default="v2_json,v2_binary,v1_features")
    cap.add_argument(
        "--rates",
        default="100,200,300,400,600,800,1000,1200,1400,1600,2000,2400",
        help="offered request rates, one step each (req/s)",
    )
    cap.add_argument("--rate-per-user", type=_positive, default=20.0)
    cap.add_argument("--step-s", type=_positive, default=8.0, help="seconds per step")
    cap.add_argument("--slo-dir", type=Path, default=SLO_DIR, help="holds <model>.yaml with p99 targets")
    cap.add_argument("--out", type=Path, default=RESULTS / "capacity")
    cap.add_argument("--docs", type=Path, help="write the capacity section of this markdown file")

    check = commands.add_parser("check", help="gate a stored summary.json against an SLO file")
    check.add_argument("summary", type=Path)
    check.add_argument(
        "--slo", type=Path, help="SLO file (YAML or JSON); default load_tests/slo/<the summary's model>.yaml"
    )
    return top


def check(args: argparse.Namespace) -> int:
    from load_tests.slo import EXIT_SLO_FILE, SloFile, SloFileError, evaluate, gate

    try:
        summary = json.loads(args.summary.read_text())
    except (OSError, ValueError) as exc:
        print(f"python -m load_tests check: summary {args.summary}: {exc}", file=sys.stderr)
        return 2
    if args.slo is None:
        model = (summary.get("target") or {}).get("model")
        args.slo = SLO_DIR / f"{model}.yaml"
        if not args.slo.is_file():
            print(
                f"python -m load_tests check: no SLO file for model {model!r} ({args.slo}): give --slo",
                file=sys.stderr,
            )
            return EXIT_SLO_FILE
    try:
        slo = SloFile.read(args.slo)
    except SloFileError as exc:
        print(f"python -m load_tests check: {exc}", file=sys.stderr)
        return EXIT_SLO_FILE
    print(f"== {args.summary} against {args.slo}")
    return gate(evaluate(slo, summary))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = argv
    if args.command == "check":
        return check(args)
    # locust patches the standard library (gevent) on import: only the commands that run it import it
    if args.command == "run":
        from load_tests.release_run import run

        if args.slo is None and (SLO_DIR / f"{args.model}.yaml").is_file():
            args.slo = SLO_DIR / f"{args.model}.yaml"
        return run(args)
    from load_tests.capacity import capacity

    return capacity(args)


if __name__ == "__main__":
    sys.exit(main())
