"""`python -m training ARGS` is `hotserve train ARGS`: what each torchrun rank runs."""

from __future__ import annotations

import argparse
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from training import cli


@record
def main() -> int:
    """Train with the command line's options; an uncaught error is recorded for torchrun's failure report."""
    parser = argparse.ArgumentParser(prog="python -m training", description="hotserve train, one process or rank")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
