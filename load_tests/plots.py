"""PNG plots of a load run, written next to its CSVs: latency percentiles and throughput over time
with the operator's actions marked, each version's share of answers over time (the canary),
and, for a step load, throughput and p99 against concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402  # after the backend is chosen
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from load_tests.recorder import Event, Series  # noqa: E402

DPI = 100
EVENT_COLOURS = {"promote": "tab:green", "rollback": "tab:red"}
GROUP_S = 1.0


def _mark_events(axes: list[Axes], events: list[Event], origin: float, label_axis: Axes) -> None:
    """A vertical line per group of operator actions (those within a second of each other share
    one), named on `label_axis`; a failed action is marked as such."""
    groups: list[list[Event]] = []
    for event in sorted(events, key=lambda e: e.started):
        if groups and event.started - groups[-1][0].started < GROUP_S:
            groups[-1].append(event)
        else:
            groups.append([event])
    for group in groups:
        x = group[0].started - origin
        actions = [e.action for e in group]
        colour = next((EVENT_COLOURS[a] for a in actions if a in EVENT_COLOURS), "0.25")
        for ax in axes:
            ax.axvline(x, color=colour, linestyle="--", linewidth=0.9, alpha=0.8)
        label = " + ".join(e.action + ("" if e.ok else " FAILED") for e in group)
        label_axis.annotate(
            label,
            xy=(x, 0.98),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
            color=colour,
        )


def latency_over_time(series: Series, events: list[Event], origin: float, path: Path, title: str) -> Path:
    fig, (lat, rate) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=[3, 2])
    for name, values in series.percentiles_ms.items():
        lat.plot(series.t_s, [float("nan") if v is None else v for v in values], label=name, linewidth=1.2)
    lat.set_ylabel("latency (ms)")
    lat.set_ylim(bottom=0)
    lat.legend(loc="upper left", fontsize=8)
    lat.grid(alpha=0.3)
    lat.set_title(title, fontsize=10)
    rate.plot(series.t_s, series.requests_per_s, color="tab:blue", label="answered req/s")
    rate.set_ylabel("requests/s")
    rate.set_ylim(bottom=0)
    failures = rate.twinx()
    failures.plot(series.t_s, series.failures_per_s, color="tab:red", label="failed req/s")
    failures.set_ylabel("failed/s", color="tab:red")
    failures.set_ylim(bottom=0, top=max(1.0, max(series.failures_per_s, default=0.0) * 1.2))
    rate.set_xlabel("seconds since the first request")
    rate.grid(alpha=0.3)
    _mark_events([lat, rate], events, origin, lat)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def version_share(series: Series, events: list[Event], origin: float, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(11, 4))
    bottom = [0.0] * len(series.t_s)
    width = series.t_s[1] - series.t_s[0] if len(series.t_s) > 1 else 1.0
    for version, shares in series.version_share.items():
        heights = [share * 100 for share in shares]
        ax.bar(
            series.t_s,
            heights,
            width=width,
            bottom=bottom,
            align="edge",
            label=f"version {version}",
            alpha=0.85,
            linewidth=0,
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of answers")
    ax.set_xlabel("seconds since the first request")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    _mark_events([ax], events, origin, ax)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


@dataclass
class StepPoint:
    scenario: str
    users: int
    offered_rps: float
    achieved_rps: float
    p99_ms: float | None
    failures: int


def step_load(points: list[StepPoint], p99_targets: dict[str, float], path: Path, title: str) -> Path:
    fig, (rate, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, scenario in enumerate(sorted({p.scenario for p in points})):
        mine = [p for p in points if p.scenario == scenario]
        colour = f"C{index}"
        rate.plot([p.users for p in mine], [p.achieved_rps for p in mine], marker="o", color=colour, label=scenario)
        rate.plot([p.users for p in mine], [p.offered_rps for p in mine], linestyle=":", color=colour, alpha=0.6)
        lat.plot(
            [p.users for p in mine],
            [float("nan") if p.p99_ms is None else p.p99_ms for p in mine],
            marker="o",
            color=colour,
            label=scenario,
        )
        if scenario in p99_targets:
            lat.axhline(p99_targets[scenario], color=colour, linestyle="--", linewidth=0.9, alpha=0.7)
    rate.set_xlabel("concurrent users")
    rate.set_ylabel("requests/s (dotted: offered)")
    rate.set_ylim(bottom=0)
    rate.grid(alpha=0.3)
    rate.legend(fontsize=8)
    lat.set_xlabel("concurrent users")
    lat.set_ylabel("p99 latency (ms; dashed: SLO)")
    lat.set_yscale("log")
    lat.yaxis.set_major_formatter(ScalarFormatter())
    lat.yaxis.set_minor_formatter(ScalarFormatter())
    lat.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
