"""`bench trend [--target T] [--metric p90_ms|worst_group_retention|accuracy|fmr_at_reference_threshold|
fmr_per_group|fnmr_per_group] [--since 30d] [--alpha 0.05]`:
one table per precision, one line per board (target) and model over the complete runs in the store, oldest first,
with change points (steps in the level, asv-style; harness/report/trend.py) listed below the table. A latency or
retention step is flagged by asv's rule (>= 5%); a rate's step, and its newest night against the one before, only
when the paired exact McNemar test on the two runs' per-sample decisions (Fisher's exact test, unpaired, where the
runs did not score the same faces) gives p < alpha (harness/report/change_test.py).
`-o trend.html` writes the same as a chart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.errors import EXIT_OK, UsageError
from harness.report.change_test import ALPHA, check_alpha
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
    p.add_argument("--alpha", type=float, default=ALPHA, metavar="A",
                   help=f"a rate's change is flagged when its test's p < A (default {ALPHA})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.html", help="also write the chart as an HTML page")
    p.set_defaults(func=run)
    return p


SPARK_POINTS = 16  # the newest nights the sparkline shows: with the other columns it fits 80 columns


def _spark(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    return "".join(bars[0 if hi == lo else int((v - lo) / (hi - lo) * (len(bars) - 1))]
                   for v in values[-SPARK_POINTS:])


def _model_variant(entry: str) -> tuple[str, str]:
    """("mobilefacenet", "onnx-int8") from the entry id "mobilefacenet--onnx-int8"."""
    model, sep, variant = entry.rpartition("--")
    return (model, variant) if sep else (entry, "-")


def print_trends(console: Console, series, title: str) -> None:
    """One table per precision (format-precision: onnx-int8 and tflite-int8 apart), one row per board and model,
    the columns that fit 80 characters without cutting a name (names fold, never end in '…'); each change point
    is a numbered note below its table (run, level before -> after, change, and the rule or test that flagged it
    with its b, c and p); a rate's candidate its test did not support is listed below as not flagged."""
    console.print(Text(title, style="bold"))
    by_variant: dict[str, list] = {}
    for s in series:
        by_variant.setdefault(_model_variant(s.entry)[1], []).append(s)
    precision_order = {"fp32": 0, "fp16": 1, "int8": 2}  # the reference first, then by falling precision
    for variant in sorted(by_variant, key=lambda v: (v.split("-")[0], precision_order.get(v.split("-")[-1], 3), v)):
        table = Table(title=f"precision {variant}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        grouped = any(s.group is not None for s in by_variant[variant])
        for col, kw in (("board", {"overflow": "fold"}), ("model", {"overflow": "fold"}),
                        *((("group", {"overflow": "fold"}),) if grouped else ()),
                        ("runs", {"justify": "right", "no_wrap": True}),
                        ("first", {"justify": "right", "no_wrap": True}),
                        ("last", {"justify": "right", "no_wrap": True}), (f"last {SPARK_POINTS}", {"no_wrap": True}),
                        ("change", {"overflow": "fold"})):
            table.add_column(col, **kw)
        notes, noise = [], []
        for s in sorted(by_variant[variant], key=lambda s: (s.target, s.entry, s.group or "")):
            refs = []
            who = f"{s.target} {_model_variant(s.entry)[0]}" + (f" {s.group}" if s.group else "")
            for st in s.steps:
                notes.append(_note(who, st))
                refs.append(f"[{len(notes)}]")
            noise += [_note(who, st) for st in s.noise]
            table.add_row(Text(s.target), Text(_model_variant(s.entry)[0]),
                          *((Text(s.group or "-"),) if grouped else ()), str(len(s.values)),
                          f"{s.values[0]:.4g}", f"{s.values[-1]:.4g}", _spark(s.values),
                          Text(" ".join(refs) or "-", style="bold red" if refs else ""))
        console.print(table)
        for i, note in enumerate(notes, 1):
            console.print(Text(f"  [{i}] {note}"))
        for note in noise:
            console.print(Text(f"  not flagged: {note}"))


def _note(who: str, st) -> str:
    what = "newest night" if st.newest else "from run"
    return (f"{who} {what} {st.run_id}: {st.before:.4g} -> {st.after:.4g}"
            + (f" ({st.change_pct:+.1f}%)" if st.change_pct is not None else "") + f"; {st.rule()}")


def run(args: argparse.Namespace) -> int:
    alpha = check_alpha(args.alpha)
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
        # inside the store's scope: a rate's test reads the runs' per-sample records from it
        series = trends(runs, args.metric, entry_glob=args.entry, alpha=alpha)
    if args.json:
        print(json.dumps({"metric": args.metric, "since": since, "alpha": alpha, "series": [s.to_dict() for s in series]}, indent=1))
    else:
        print_trends(Console(), series, f"{args.metric} over {len(runs)} run(s)" + (f" since {since}" if since else ""))
    if args.output:
        from harness.report.buyers import trend_page

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(trend_page(series, args.metric), encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK
