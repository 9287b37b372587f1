"""What a load run leaves behind: the JSON summary (the SLO gate's input), the machine it ran on,
and the markdown sections of `docs/benchmarks.md`.

Percentiles in the summary are exact, computed from every request's own time (the recorder);
locust's CSV and HTML round response times into its buckets (whole milliseconds below 100 ms).
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from load_tests.locust_run import LoadRun
from load_tests.markdown import utc_minute
from load_tests.recorder import Recorder
from load_tests.scenarios import PREDICTION_NAMES
from load_tests.server_process import REPO_ROOT as ROOT


def machine() -> dict[str, Any]:
    """Where the run happened, and how busy the machine was when it began."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kb = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), 0
    )
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kb / 2**20, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "locust": version("locust"),
        "date": utc_minute(),
    }


def shown(path: Path | str) -> str:
    """`path` relative to the checkout when it lies inside it (as the docs show it), else as given."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def request_stats(recorder: Recorder, names: list[str], start: float, end: float) -> dict[str, Any]:
    window = recorder.window(names, start, end)
    return {
        "requests": window.requests,
        "failures": window.failures,
        "requests_per_s": round(window.requests_per_s, 1),
        "p50_ms": None if window.p50_ms is None else round(window.p50_ms, 3),
        "p99_ms": None if window.p99_ms is None else round(window.p99_ms, 3),
    }


def summary(
    run: LoadRun,
    *,
    command: str,
    host: str,
    model: str,
    settings: dict[str, Any],
    server_cpu_s: float | None,
    promotion_window_s: float,
    restored: list[str],
) -> dict[str, Any]:
    """The run in one JSON document."""
    recorder = run.recorder
    start, end = run.phases[0].started, run.phases[-1].ended
    names = sorted({name for (name, _method) in run.environment.stats.entries})
    scenarios = {name: request_stats(recorder, [name], start, end) for name in names if not name.startswith("admin")}
    admin = {name: request_stats(recorder, [name], start, end) for name in names if name.startswith("admin")}
    total = run.environment.stats.total
    prediction = recorder.window(PREDICTION_NAMES, start, end)
    windows = recorder.routing_windows(promotion_window_s)
    in_windows, failed_in_windows = recorder.failures_in(PREDICTION_NAMES, windows)
    duration = end - start
    return {
        "command": command,
        "machine": machine(),
        "target": {"host": host, "model": model},
        "settings": settings,
        "duration_s": round(duration, 2),
        "scenarios": scenarios,
        "admin": admin,
        "total": {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "error_ratio": total.num_failures / total.num_requests if total.num_requests else 0.0,
            "prediction_requests": prediction.requests,
            "prediction_requests_per_s": round(prediction.requests / duration, 1) if duration else 0.0,
        },
        "failures": [
            {"name": e.name, "error": str(e.error), "count": e.occurrences}
            for e in run.environment.stats.errors.values()
        ],
        "user_errors": run.user_errors,
        "promotions": {
            "window_s": promotion_window_s,
            "requests": in_windows,
            "failures": failed_in_windows,
            "windows": [
                {"action": e.action, "started": e.started, "ended": e.ended, "ok": e.ok} for e, _, _ in windows
            ],
        },
        "events": [e.as_dict() for e in recorder.events],
        "versions_answered": recorder.versions_answered(PREDICTION_NAMES),
        "cpu": {
            "generator_cores": round(run.generator_cpu_s / run.wall_s, 2) if run.wall_s else None,
            "server_cores": round(server_cpu_s / run.wall_s, 2) if server_cpu_s is not None and run.wall_s else None,
        },
        "restored_after_run": restored,
        "files": {k: shown(v) for k, v in run.files.items()},
    }


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def release_section(summary_doc: dict[str, Any], plots: dict[str, str]) -> list[str]:
    """Markdown for a mixed run with the operator (the release rehearsal)."""
    m, s, total = summary_doc["machine"], summary_doc["settings"], summary_doc["total"]
    promotions = summary_doc["promotions"]
    actions: dict[str, list[dict[str, Any]]] = {}
    for event in summary_doc["events"]:
        actions.setdefault(event["action"], []).append(event)
    lines = [
        "## Release rehearsal under load (locust: mixed traffic + an operator)",
        "",
        f"Measured {m['date']} on {m['host']}: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"load average {m['load_average'][0]} at the start; CPython {m['python']}, locust {m['locust']} "
        "(one generator process on the same cores as the server). Produced by:",
        "",
        "```bash",
        summary_doc["command"],
        "```",
        "",
        f"{s['users']} users ({', '.join(f'{k} {v}' for k, v in s['mix'].items())} by weight"
        f"{', plus 1 operator' if s['operator'] else ''}), each pacing itself to {s['rate_per_user']:g} req/s, "
        f"for {summary_doc['duration_s']:.0f} s; {s['unknown_share']:.0%} of v1 records name an entity the "
        f"feature store does not hold (each must be a 404 naming it). Every answer is checked: status, "
        f"outputs and their shapes, the version that answered. The generator took "
        f"{summary_doc['cpu']['generator_cores']} cores, the server {summary_doc['cpu']['server_cores']}.",
        "",
        f"**{total['failures']} failed of {total['requests']} requests** "
        f"({total['prediction_requests_per_s']:.0f} prediction req/s); around the "
        f"{len(promotions['windows'])} production changes (promote and rollback, each from its call to "
        f"{promotions['window_s']:g} s after its answer) {promotions['failures']} of {promotions['requests']} "
        "prediction requests failed.",
        "",
        "| scenario | requests | failed | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {st['requests']} | {st['failures']} | {st['requests_per_s']:.0f} | {_ms(st['p50_ms'])} | "
            f"{_ms(st['p99_ms'])} |"
            for name, st in summary_doc["scenarios"].items()
        ),
        "",
        "| operator action | times | failed | longest call ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {action} | {len(events)} | {sum(not e['ok'] for e in events)} | "
            f"{max(e['ended'] - e['started'] for e in events) * 1000:.0f} |"
            for action, events in actions.items()
        ),
        "",
        "Inside the server (its own latency histogram, interpolated within buckets): "
        + "; ".join(
            f"{protocol} p50 {_ms(st['p50_ms'])} ms, p99 {_ms(st['p99_ms'])} ms"
            for protocol, st in summary_doc.get("server_latency", {}).items()
        )
        + ". The difference to the client's figures is the network stack and the generator sharing the cores.",
        "",
        "Answers per version: " + ", ".join(f"v{v} {n}" for v, n in summary_doc["versions_answered"].items()) + ".",
        "",
        *(f"![{title}]({path})" for title, path in plots.items()),
    ]
    if summary_doc.get("slo"):
        lines += [
            "",
            "SLO gate (`" + summary_doc["slo_file"] + "`):",
            "",
            *(
                f"- {'pass' if v['passed'] else 'FAIL'}: {v['slo']} measured {v['measured']} (target {v['target']})"
                for v in summary_doc["slo"]
            ),
        ]
    return lines
