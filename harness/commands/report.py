"""`bench report RUN... -o report.html`: one self-contained HTML report (or Markdown / CSV by --format or suffix)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_OK
from harness.report.html import FORMATS, render, report_format
from harness.results.store import atomic_write_bytes
from harness.results.uri import store_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write an HTML/Markdown/CSV report of runs", description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes) or run directories")
    p.add_argument("-o", "--output", type=Path, help="output file ('-' or omitted: stdout)")
    p.add_argument("--format", choices=FORMATS, help="default: from the output suffix, else html")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        runs = [store.load(ref) for ref in args.runs]
    out = None if args.output in (None, Path("-")) else args.output
    text = render(runs, report_format(out, args.format))
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, text.encode("utf-8"))
        print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK
