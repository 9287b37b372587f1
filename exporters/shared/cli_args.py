"""What `hotserve export` and `hotserve import` share on the command line: exit codes, value
types, the repository and version to publish into, and the batching overrides.

Free of onnx/torch imports: `hotserve`'s parser is built from it on every command.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from exporters.errors import ExportError, MetricRegression, ParityError
from server.settings import Settings

Result = TypeVar("Result")

EXIT_REFUSED = 1
"""Refused: the input is unusable, the version exists, or the pipeline failed."""
EXIT_PARITY = 3
"""The graph failed its parity or metric check."""


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def default_repository() -> str:
    """Where versions are published unless `--repository` says: the server's setting."""
    return os.environ.get("HOTSERVE_MODEL_REPOSITORY") or str(Settings.model_fields["model_repository"].default)


def add_destination(parser: argparse.ArgumentParser, name: str, version_default: str) -> None:
    """`--repository` and `--version`: where the new version is published."""
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(default_repository()),
        help=f"model repository to publish <{name}>/<version>/ into "
        "(default: $HOTSERVE_MODEL_REPOSITORY or %(default)s)",
    )
    parser.add_argument(
        "--version",
        type=positive_int,
        default=None,
        help=f"version number (default: {version_default}); an existing version is never overwritten",
    )


def add_batching(parser: argparse.ArgumentParser, default_from: str) -> None:
    """The batching overrides `model.json` records (`--max-batch-size`, `--max-queue-delay-ms`, `--instances`)."""
    batching = parser.add_argument_group("batching")
    batching.add_argument(
        "--max-batch-size", type=positive_int, default=None, help=f"override the {default_from} batching default"
    )
    batching.add_argument(
        "--max-queue-delay-ms",
        type=non_negative_float,
        default=None,
        help=f"override the {default_from} batching default",
    )
    batching.add_argument(
        "--instances",
        type=positive_int,
        default=None,
        help=f"batches run at once by the server (override the {default_from} default)",
    )


def run_pipeline(command: str, mismatch: str, pipeline: Callable[[], Result]) -> Result | int:
    """`pipeline()`'s result; or, when it refused, the reason on stderr and the exit code:
    EXIT_PARITY for a failed parity or metric check (`mismatch` says against what), else EXIT_REFUSED."""
    try:
        return pipeline()
    except (ParityError, MetricRegression) as exc:
        print(f"hotserve {command}: REFUSED, {mismatch}: {exc}", file=sys.stderr)
        return EXIT_PARITY
    except ExportError as exc:
        print(f"hotserve {command}: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def format_size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e5 else f"{size_bytes / 1e3:.1f} kB"
