"""`bench runs`: list the runs under the results root (from the SQLite index, synced with the run dirs)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from harness.errors import EXIT_OK
from harness.paths import results_root
from harness.report.console import user_table
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
    table = user_table(f"{len(rows)} run(s) in {results_root(args.results_dir).path}",
                       ("run id", "target", "created (UTC)", "status", "commit", "models", "variants"),
                       [(r.run_id, r.target, r.created_utc, r.status, (r.commit or "-")[:10] + ("+dirty" if r.dirty else ""),
                         ", ".join(r.models), ", ".join(r.variants)) for r in rows], title_justify="left")
    Console().print(table)
    return EXIT_OK
