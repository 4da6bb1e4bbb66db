"""`bench trend [--target T] [--metric p90_ms|worst_group_retention|fmr_at_reference_threshold] [--since 30d]`:
one line per board (target) and entry over the complete runs in the store, oldest first, with change points
(steps in the level, asv-style; harness/report/trend.py) flagged. `-o trend.html` writes the same as a chart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.errors import EXIT_OK, UsageError
from harness.report.trend import METRICS, parse_since, trends
from harness.results.base import warn_if_future
from harness.results.uri import store_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("trend", help="per-board trends over nightly runs, with change points flagged",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", default=[], metavar="T", help="board(s) (repeatable; default all)")
    p.add_argument("--metric", choices=METRICS, default="p90_ms")
    p.add_argument("--since", metavar="AGE|DATE", help="only runs newer than this: 30d, 12h, 2w or an ISO date")
    p.add_argument("--entry", default="*", metavar="GLOB", help="only entries matching this glob")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.html", help="also write the chart as an HTML page")
    p.set_defaults(func=run)
    return p


def _spark(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    return "".join(bars[0 if hi == lo else int((v - lo) / (hi - lo) * (len(bars) - 1))] for v in values[-40:])


def run(args: argparse.Namespace) -> int:
    since = parse_since(args.since)
    with store_from_args(args) as store:
        targets = args.target or store.targets()
        rows = [r for t in targets for r in store.query(target=t, since=since, status="complete")]
        if not rows:
            raise UsageError(f"no complete runs of {', '.join(targets) or 'any target'} in {store.uri}"
                             + (f" since {since}" if since else ""))
        for r in rows:  # ordered and windowed by when the store recorded it (harness/results/index.py "Order")
            warn_if_future(r, "it is placed and windowed by when the store recorded it, not by its date")
        runs = [store.load_id(r.run_id) for r in rows]
    series = trends(runs, args.metric, entry_glob=args.entry)
    if args.json:
        print(json.dumps({"metric": args.metric, "since": since, "series": [s.to_dict() for s in series]}, indent=1))
    else:
        table = Table(title=f"{args.metric} over {len(runs)} run(s)" + (f" since {since}" if since else ""),
                      title_justify="left")
        for col in ("target", "entry", "runs", "first", "last", "trend", "change points"):
            table.add_column(col)
        for s in series:
            steps = "; ".join(f"{st.run_id}: {st.before:.4g} -> {st.after:.4g}"
                              + (f" ({st.change_pct:+.1f}%)" if st.change_pct is not None else "") for st in s.steps)
            table.add_row(Text(s.target), Text(s.entry), str(len(s.values)), f"{s.values[0]:.4g}",
                          f"{s.values[-1]:.4g}", _spark(s.values), Text(steps or "-",
                                                                      style="bold red" if steps else ""))
        Console().print(table)
    if args.output:
        from harness.report.buyers import trend_page

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(trend_page(series, args.metric), encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK
