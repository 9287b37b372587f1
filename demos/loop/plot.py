"""The loop's plot: per version, live AUC over the quality span (what the alert reads) and per
window, the label-free estimate and the training figure; the loop's events as vertical lines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from demos.loop.watch import Look

COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:brown")
MIN_WINDOW_LABELS = 500
"""Windows with fewer labels are not drawn (a canary's first windows: a few dozen rows)."""
MIN_LOOK_LABELS = 200


def plot(
    path: Path,
    origin: float,
    windows: Sequence[tuple[str, float, float, float, int]],
    looks: Sequence[Look],
    events: Sequence[tuple[float, str]],
    span_s: float,
) -> None:
    """Write the PNG; x is seconds of served time since `origin` (when v1 started serving)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5.6), dpi=110)
    versions = sorted({w[0] for w in windows} | {look.version for look in looks}, key=int)
    for i, version in enumerate(versions):
        colour = COLOURS[i % len(COLOURS)]
        mine = [look for look in looks if look.version == version and look.labels >= MIN_LOOK_LABELS]
        live = [(look.at - origin, look.live) for look in mine if look.live is not None]
        if live:
            axes.plot(
                *zip(*live, strict=True), color=colour, linewidth=2, label=f"v{version} live AUC, last {span_s:.0f} s"
            )
        points = [w for w in windows if w[0] == version and w[4] >= MIN_WINDOW_LABELS]
        if points:
            axes.scatter(
                [(w[1] + w[2]) / 2 - origin for w in points], [w[3] for w in points],
                color=colour, s=14, alpha=0.5, label=f"v{version} live AUC per window",
            )  # fmt: skip
        estimate = [(look.at - origin, look.estimate) for look in mine if look.estimate is not None]
        if estimate:
            axes.plot(
                *zip(*estimate, strict=True), linestyle="--", color=colour, label=f"v{version} label-free estimate"
            )
        reference = next((look.reference for look in looks if look.version == version and look.reference), None)
        if reference is not None:
            axes.axhline(reference, color=colour, linestyle=":", linewidth=1, label=f"v{version} training AUC")
    for at, name in events:
        axes.axvline(at - origin, color="grey", linewidth=0.8)
        axes.annotate(
            name,
            (at - origin, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="bottom",
            fontsize=8,
        )
    axes.set_xlabel("seconds since v1 started serving")
    axes.set_ylabel("AUC")
    axes.set_title("Live quality of the fraud model through a concept shift, a retrain and a release")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, ncol=4, frameon=False)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
