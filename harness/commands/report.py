"""`bench report RUN... -o report.html`: one self-contained HTML report (or Markdown / CSV by --format or suffix)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_OK, InputError
from harness.paths import results_root
from harness.report.html import FORMATS, render, report_format
from harness.files import atomic_write_bytes, cannot_write, ensure_dir
from harness.names import shown
from harness.results.store import load_run, resolve_run


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write an HTML/Markdown/CSV report of runs", description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes) or run directories")
    p.add_argument("-o", "--output", type=Path, help="output file ('-' or omitted: stdout)")
    p.add_argument("--format", choices=FORMATS, help="default: from the output suffix, else html")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    root = results_root(args.results_dir).path
    runs = [load_run(resolve_run(ref, root)) for ref in args.runs]
    out = None if args.output in (None, Path("-")) else args.output
    text = render(runs, report_format(out, args.format))
    if out is None:
        sys.stdout.write(text)
    else:
        if out.is_dir():
            raise InputError(f"report output {shown(out)} is a folder; give a file name such as report.html")
        ensure_dir(out.parent, "report folder")
        try:
            atomic_write_bytes(out, text.encode("utf-8"))
        except OSError as exc:
            raise cannot_write(out, exc, "report") from None
        print(f"wrote {shown(out)}", file=sys.stderr)
    return EXIT_OK
