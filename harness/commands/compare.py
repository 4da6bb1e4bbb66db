"""`bench compare RUN_A RUN_B ...`: side-by-side entries with deltas vs the first run, environment warnings and
the Pareto front (latency, worst-group error, energy)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.errors import EXIT_OK, UsageError
from harness.paths import results_root
from harness.report.compare import compare
from harness.results.store import load_run, resolve_run


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="compare runs side by side", description=__doc__)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids (or unique prefixes) or run directories")
    p.add_argument("--target", action="append", default=[], metavar="T",
                   help="add the newest complete run of target T from the results index (repeatable), e.g. "
                        "--target cpu --target jetson for a side-by-side of two devices")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--md", action="store_true", help="print Markdown")
    p.set_defaults(func=run)
    return p


def _newest_complete(root, target: str) -> str:
    from harness.results.index import RunIndex

    rows = [r for r in RunIndex(root).query(target=target) if r.status == "complete"]
    if not rows:
        raise UsageError(f"no complete run for target '{target}' in {root}")
    return rows[-1].path  # query() lists oldest first


def run(args: argparse.Namespace) -> int:
    root = results_root(args.results_dir).path
    refs = list(args.runs) + [_newest_complete(root, t) for t in args.target]
    if len(refs) < 1:
        raise UsageError("compare needs runs: give RUN ids/paths and/or --target T")
    table = compare([load_run(resolve_run(ref, root)) for ref in refs])
    if args.json:
        print(json.dumps(table.to_dict(), indent=1))
        return EXIT_OK
    if args.md:
        print(table.to_markdown())
        return EXIT_OK
    console = Console()
    for w in table.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    rows = table.long_rows()
    out = Table(title=f"deltas vs {table.run_ids[0]}", title_justify="left")
    for col in (rows[0] if rows else {"model": None}):
        out.add_column(col)
    for r in rows:
        out.add_row(*(Text(str(v)) for v in r.values()))
    console.print(out)
    if table.cross_isa:
        isa = Table(title="cross-ISA precision loss (same pack, same inputs)", title_justify="left")
        for col in table.cross_isa[0]:
            isa.add_column(col)
        for r in table.cross_isa:
            isa.add_row(*(Text(str(v)) for v in r.values()))
        console.print(isa)
    return EXIT_OK
