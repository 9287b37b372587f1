"""The loop's plot: live AUC per window and version, the label-free estimate, and the events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from demos.loop.watch import Look

COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:brown")


def plot(
    path: Path,
    start: float,
    windows: Sequence[tuple[str, float, float, float, int]],
    looks: Sequence[Look],
    events: Sequence[tuple[float, str]],
) -> None:
    """Write the PNG: x is seconds since the demo started (served time for the windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4.8), dpi=110)
    versions = sorted({w[0] for w in windows} | {look.version for look in looks}, key=int)
    for i, version in enumerate(versions):
        colour = COLOURS[i % len(COLOURS)]
        mine = sorted((w for w in windows if w[0] == version), key=lambda w: w[1])
        if mine:
            axes.plot(
                [(w[1] + w[2]) / 2 - start for w in mine],
                [w[3] for w in mine],
                marker="o",
                color=colour,
                label=f"v{version} live AUC (labels, per window)",
            )
        estimate = [
            (look.at - start, look.estimate) for look in looks if look.version == version and look.estimate is not None
        ]
        if estimate:
            axes.plot(
                *zip(*estimate, strict=True),
                linestyle="--",
                color=colour,
                alpha=0.7,
                label=f"v{version} label-free estimate",
            )
        reference = next((look.reference for look in looks if look.version == version and look.reference), None)
        if reference is not None:
            axes.axhline(reference, color=colour, linestyle=":", linewidth=1, label=f"v{version} training AUC")
    for at, name in events:
        axes.axvline(at - start, color="grey", linewidth=0.8)
        axes.annotate(
            name, (at - start, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize=8
        )
    axes.set_xlabel("seconds since the demo started")
    axes.set_ylabel("AUC")
    axes.set_title("hotserve: live quality of the fraud model through a concept shift and a retrain")
    axes.legend(loc="lower left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
