"""Benchmark results into `docs/benchmarks.md`: each benchmark owns one section between its markers
and rewrites only that, so the benchmarks can run (and be rerun) independently."""

from __future__ import annotations

import time
from pathlib import Path


def replace_section(path: Path, start: str, end: str, lines: list[str]) -> None:
    """Replace the text from `start` to `end` in `path` with `lines` (which open with `start` and
    close with `end`), or append them if the markers are not there yet."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "\n".join(lines)
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def utc_minute() -> str:
    """The current UTC time as reports date their results: `2026-01-31 14:05 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
