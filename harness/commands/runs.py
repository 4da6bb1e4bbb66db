"""`bench runs`: list the runs in the results store (file://: the SQLite index synced with the run dirs;
postgresql://: the efb_runs table)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from harness.errors import EXIT_OK
from harness.results.uri import store_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("runs", help="list recorded runs", description=__doc__)
    p.add_argument("--target", help="only runs on this target id")
    p.add_argument("--model", help="only runs with an entry of this model id")
    p.add_argument("--commit", help="only runs from this git commit (prefix)")
    p.add_argument("--since", metavar="DATE", help="only runs made at or after this ISO date/time (UTC); a run dated ahead of the clock "
                   "that recorded it counts from when it was recorded")
    p.add_argument("--status", choices=("complete", "partial", "failed"), help="only runs with this status")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        rows = store.query(target=args.target, model=args.model, commit=args.commit, since=args.since,
                           status=args.status)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return EXIT_OK
    print_runs(Console(), rows, f"{len(rows)} run(s) in {store.uri}")
    return EXIT_OK


def _created(r) -> str:
    """The run's own date, flagged when it is ahead of the clock that recorded it (runs are listed in the store's
    order, harness/results/index.py "Order"; JSON has `future`)."""
    return f"{r.created_utc} (future!)" if r.future else r.created_utc


def _commit(r) -> str:
    return (r.commit or "-")[:10] + ("+dirty" if r.dirty else "")


def print_runs(console: Console, rows: list, title: str) -> None:
    """A table when it fits the terminal unwrapped; otherwise one block per run: the whole run id on its own line
    (it is what users copy into `bench report`/`compare`, so it is never wrapped or cut), its details below."""
    table = Table(title=title, title_justify="left")
    for col in ("run id", "target", "created (UTC)", "status", "commit", "models", "variants"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(Text(r.run_id), Text(r.target), _created(r), r.status, Text(_commit(r)),
                      Text(", ".join(r.models)), Text(", ".join(r.variants)))
    if Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width:
        console.print(table)
        return
    console.print(Text(title))
    for r in rows:
        console.print(Text(r.run_id, style="bold"), no_wrap=True, overflow="ignore", crop=False)
        console.print(Text(f"  {r.target} · {r.status} · {_created(r)} · commit {_commit(r)}\n"
                           f"  models: {', '.join(r.models)}\n  variants: {', '.join(r.variants)}"))
