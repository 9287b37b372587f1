"""`hotserve` command line: one entry point, each package owns its subcommands.

Training, export and import live in packages that need the `train` extra (torch, onnx,
pandas); their heavy imports happen only when their subcommand runs, so the server's
install never needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module defining `add_arguments(parser)` and `run(args) -> int`
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.cli", "train a model and write a versioned checkpoint"),
    "export": ("exporters.export.cli", "export a checkpoint to ONNX into a model repository"),
    "import": ("exporters.imports.cli", "import an ONNX file made elsewhere into a model repository"),
    "serve": ("server.serve", "serve a model repository over HTTP"),
    "features": ("server.features.materialize", "online feature store: materialize entity features"),
    "models": ("server.admin_cli", "load, unload, promote and roll back model versions (admin API)"),
    "release": ("server.release_cli", "progressive delivery: shadow, canary steps, gates, promote or roll back"),
    "labels": ("server.labels_cli", "send ground truth by request id (JSON lines, CSV, Parquet); live quality"),
    "retrain": ("training.retrain.cli", "retrain production on captured rows and labels, then release it if better"),
    "retrain-webhook": (
        "server.jobs.cli",
        "Alertmanager receiver: a firing quality alert starts the retrain CronJob's Job",
    ),
    "control": ("server.registry.control_cli", "control document in Redis: sign the stored routing"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotserve", description="train, export and serve models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    if unknown:
        # A subcommand may say why an argument is not one of its flags (a secret: `--redis-url`).
        refusal = getattr(module, "secret_flag_refusal", lambda _: None)(unknown)
        parser.error(refusal or f"unrecognized arguments: {' '.join(unknown)}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
