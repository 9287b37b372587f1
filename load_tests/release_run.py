"""`python -m load_tests run`: a bounded mixed load, with the operator releasing a version through
it, against a server this command starts on the demo model (or a given URL); then the report,
the plots and the SLO gate.

A started server gets an admin token of the run's own, the demo customers in its embedded
feature store (`HOTSERVE_FEATURE_TABLE`) and a fresh control state in the output folder, so
every run begins with `production` on the oldest version and nothing left from an earlier run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import psutil

from load_tests import plots, report
from load_tests.demo_models import demo_repository, fresh_control_state
from load_tests.found_state import FoundState, found_state, restore
from load_tests.locust_run import Phase, run_load
from load_tests.markdown import replace_section
from load_tests.operator import OperatorPlan, OperatorUser
from load_tests.recorder import Recorder
from load_tests.scenarios import PREDICTION_NAMES, prediction_users
from load_tests.server_metrics import latency_buckets, server_latency
from load_tests.server_process import ServerProcess, start_server
from load_tests.slo import EXIT_SLO_FILE, SloFile, SloFileError, evaluate, gate
from load_tests.target import read_target

START, END = "<!-- loadtest-release:start -->", "<!-- loadtest-release:end -->"
EXIT_MODEL_IN_USE = 4
"""The operator would not leave the model as it found it (its canary, split or shadow; no production)."""


def parse_mix(text: str) -> dict[str, int]:
    """`v2_json=4,v2_binary=3,v1_features=3` -> {scenario: weight}."""
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        mix[name] = int(weight or 1)
    return mix


def start_demo_server(args: argparse.Namespace, token: str, versions_needed: int) -> ServerProcess:
    versions = demo_repository(args.repository, args.model, versions_needed)
    control = fresh_control_state(args.out / "control" / "control.json", args.model, min(versions))
    env = {
        "HOTSERVE_ADMIN_TOKENS": f"loadtest:{token}",
        "HOTSERVE_CONTROL_STATE_PATH": str(control),
        "HOTSERVE_AUDIT_LOG_PATH": str(args.out / "control" / "audit.jsonl"),
        "HOTSERVE_LOG_LEVEL": "warning",
        "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
    }
    if args.entities:
        env["HOTSERVE_FEATURE_TABLE"] = args.entities
    for setting in args.server_env:
        name, _, value = setting.partition("=")
        if not name.startswith("HOTSERVE_") or not _:
            raise SystemExit(f"--server-env {setting!r}: expected HOTSERVE_NAME=VALUE")
        env[name] = value
    print(f"== serving {args.repository} (model {args.model}, versions {versions})", flush=True)
    return start_server(args.repository, args.out / "server.log", env=env, startup_timeout_s=180)


def run(args: argparse.Namespace) -> int:
    try:
        slo = SloFile.read(args.slo) if args.slo else SloFile()
    except SloFileError as exc:
        print(f"python -m load_tests run: {exc}", file=sys.stderr)
        return EXIT_SLO_FILE
    args.out.mkdir(parents=True, exist_ok=True)
    mix = parse_mix(args.mix)
    server: ServerProcess | None = None
    token = os.environ.get("HOTSERVE_ADMIN_TOKEN", "") if args.url else secrets.token_urlsafe(24)
    if args.operator and not token:
        raise SystemExit(
            "the operator needs an admin token for --url: export HOTSERVE_ADMIN_TOKEN (or run with --no-operator)"
        )
    found: FoundState | None = None
    if args.url is not None and args.operator:
        found = found_state(args.url, token, args.model)
        refusal = found.in_the_way()
        if refusal:
            print(f"python -m load_tests run: {refusal}", file=sys.stderr)
            return EXIT_MODEL_IN_USE
    if args.url is None:
        server = start_demo_server(args, token, 2 if args.operator else 1)
    host = args.url or (server.base_url if server else "")
    restored: list[str] = []
    try:
        target = read_target(host, args.model, rows=args.rows, entities=args.entities, unknown_share=args.unknown_share)
        recorder = Recorder()
        classes = prediction_users(target, mix, args.rate_per_user)
        if args.operator and found is None:
            found = found_state(host, token, args.model)
        if args.operator:
            plan = OperatorPlan(
                model=args.model,
                token=token,
                interval_s=args.operator_interval,
                requirements=json.loads(args.promotion_requirements),
            )
            classes.append(type("operator", (OperatorUser,), {"abstract": False, "plan": plan, "recorder": recorder}))
        server_process = psutil.Process(server.process.pid) if server else None
        server_cpu_before = sum(server_process.cpu_times()[:2]) if server_process else 0.0
        buckets_before = latency_buckets(host, args.model)
        print(
            f"== {args.users} users ({args.mix}{' + operator' if args.operator else ''}) at "
            f"{args.rate_per_user:g} req/s each for {args.duration:g} s against {host}",
            flush=True,
        )
        load = run_load(host, classes, [Phase(args.users, args.spawn_rate, args.duration)], args.out, recorder=recorder)
        server_cpu_s = sum(server_process.cpu_times()[:2]) - server_cpu_before if server_process else None
        answered_by_server = server_latency(buckets_before, latency_buckets(host, args.model))
        if found is not None:
            restored = restore(host, token, found)
    finally:
        if server is not None:
            server.stop()
    settings = {
        "duration_s": args.duration,
        "users": args.users,
        "spawn_rate": args.spawn_rate,
        "rate_per_user": args.rate_per_user,
        "mix": mix,
        "operator": args.operator,
        "operator_interval_s": args.operator_interval,
        "rows_per_request": args.rows,
        "unknown_share": args.unknown_share,
    }
    command = "python -m load_tests " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    doc = report.summary(
        load,
        command=command,
        host=host,
        model=args.model,
        settings=settings,
        server_cpu_s=server_cpu_s,
        promotion_window_s=slo.promotion_window_s,
        restored=restored,
    )
    doc["server_latency"] = answered_by_server
    drawn = draw(load.recorder, args.out, args.model)
    doc["plots"] = {k: report.shown(v) for k, v in drawn.items()}
    verdicts = evaluate(slo, doc) if args.slo else []
    doc["slo_file"] = report.shown(args.slo) if args.slo else None
    doc["slo"] = [v.as_dict() for v in verdicts]
    (args.out / "summary.json").write_text(json.dumps(doc, indent=2))
    print_summary(doc, args.out)
    if args.docs:
        publish(doc, drawn, args.docs)
    if load.user_errors:
        print("scenario code raised (a bug in the load test, not the server):\n  " + "\n  ".join(load.user_errors))
        return 2
    return gate(verdicts) if verdicts else 0


def draw(recorder: Recorder, out: Path, model: str) -> dict[str, Path]:
    series = recorder.series(PREDICTION_NAMES)
    origin = recorder.first_request()
    drawn = {
        "latency over time": plots.latency_over_time(
            series,
            recorder.events,
            origin,
            out / "latency_over_time.png",
            f"{model}: latency of prediction requests (all scenarios) per second; operator actions dashed",
        )
    }
    if len(series.version_share) > 1 or recorder.events:
        drawn["version share"] = plots.version_share(
            series,
            recorder.events,
            origin,
            out / "version_share.png",
            f"{model}: share of answers per version (canary split, promotion, rollback)",
        )
    return drawn


def print_summary(doc: dict[str, Any], out: Path) -> None:
    total = doc["total"]
    print(f"\n{'scenario':20s} {'requests':>9s} {'failed':>7s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, st in {**doc["scenarios"], **doc["admin"]}.items():
        print(
            f"{name:20s} {st['requests']:9d} {st['failures']:7d} {st['requests_per_s']:8.1f} "
            f"{report._ms(st['p50_ms']):>8s} {report._ms(st['p99_ms']):>8s}"
        )
    print(
        f"total: {total['requests']} requests, {total['failures']} failed; "
        f"{total['prediction_requests_per_s']:.0f} prediction req/s; versions answered {doc['versions_answered']}; "
        f"generator {doc['cpu']['generator_cores']} cores, "
        + (
            f"server {doc['cpu']['server_cores']} cores"
            if doc["cpu"]["server_cores"] is not None
            else "server cores not measured (--url: a server this command did not start)"
        )
    )
    for protocol, st in doc["server_latency"].items():
        print(
            f"server-side {protocol}: {st['requests']:.0f} requests, p50 {report._ms(st['p50_ms'])} ms, "
            f"p99 {report._ms(st['p99_ms'])} ms (its own histogram, interpolated within buckets)"
        )
    for failure in doc["failures"][:10]:
        print(f"  failed {failure['count']}x {failure['name']}: {failure['error'][:300]}")
    if doc["restored_after_run"]:
        print(f"after the run: {', '.join(doc['restored_after_run'])}")
    print(f"report: {out}/summary.json, {doc['files']['html']}, plots {', '.join(doc['plots'].values())}")


def publish(doc: dict[str, Any], drawn: dict[str, Path], docs: Path) -> None:
    """Copy the plots and the summary beside `docs` (under loadtest/) and rewrite its section."""
    folder = docs.parent / "loadtest"
    folder.mkdir(parents=True, exist_ok=True)
    links = {}
    for title, path in drawn.items():
        shutil.copy2(path, folder / f"release_{path.name}")
        links[title] = f"loadtest/release_{path.name}"
    (folder / "release_summary.json").write_text(json.dumps(doc, indent=2))
    replace_section(
        docs,
        START,
        END,
        [
            START,
            *report.release_section(doc, links),
            "",
            "The whole summary: [loadtest/release_summary.json](loadtest/release_summary.json).",
            END,
        ],
    )
