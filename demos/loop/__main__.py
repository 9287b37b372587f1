"""`python -m demos.loop`: the whole loop in a few minutes, its timeline and the plot (docs/loop.md)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from demos.loop.run import Loop, LoopError, LoopSettings
from load_tests.server_process import REPO_ROOT


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.loop", description=__doc__)
    parser.add_argument("--work", type=Path, help="an empty folder for the run (default: a new temporary one)")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "img" / "loop-auc.png")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default %(default)s)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hotserve-loop-"))
    loop = Loop(LoopSettings(work=work, rate_rps=args.rate, plot_path=args.plot), lambda line: print(line, flush=True))
    try:
        result = loop.run()
    except LoopError as error:
        print(f"loop demo: {error} (logs in {work})", file=sys.stderr)
        return 1
    print(
        f"answered {result.answered} requests, {result.labels_joined} labels joined "
        f"({result.label_retries} label batches sent again after a 503); files in {work}"
    )
    return 0 if result.retrain_exit == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
