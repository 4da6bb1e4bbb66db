"""`bench data ...` driven through its real argparse registration, with errors raised rather than mapped to exit
codes (harness.cli.main maps them), so tests can assert on the exception and its message."""

from __future__ import annotations

import argparse

from harness.commands import data as data_cmd


def bench_data(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--data-root")
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)
