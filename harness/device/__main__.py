"""`python -m harness.device JOB --out DIR`: the worker without the `bench` CLI around it."""

from __future__ import annotations

import argparse
import sys

from harness.device.main import add_arguments, run
from harness.errors import EXIT_INTERRUPTED, BenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.device", description="Run one benchmark job.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"harness.device: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


sys.exit(main())
