"""`bench runs`: list the runs under the results root (from the SQLite index, synced with the run dirs)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.errors import EXIT_OK
from harness.paths import results_root
from harness.results.index import RunIndex


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("runs", help="list recorded runs", description=__doc__)
    p.add_argument("--target", help="only runs on this target id")
    p.add_argument("--model", help="only runs with an entry of this model id")
    p.add_argument("--commit", help="only runs from this git commit (prefix)")
    p.add_argument("--since", metavar="DATE", help="only runs created at or after this ISO date/time (UTC)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    rows = RunIndex(results_root(args.results_dir).path).query(target=args.target, model=args.model, commit=args.commit,
                                                          since=args.since)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return EXIT_OK
    table = Table(title=f"{len(rows)} run(s) in {results_root(args.results_dir).path}", title_justify="left")
    for col in ("run id", "target", "created (UTC)", "status", "commit", "models", "variants"):
        table.add_column(col)
    for r in rows:
        commit = (r.commit or "-")[:10] + ("+dirty" if r.dirty else "")
        table.add_row(Text(r.run_id), Text(r.target), r.created_utc, r.status, Text(commit), Text(", ".join(r.models)),
                      Text(", ".join(r.variants)))
    Console().print(table)
    return EXIT_OK
