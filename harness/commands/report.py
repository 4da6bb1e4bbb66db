"""`bench report RUN... -o report.html`: one self-contained HTML report (or Markdown / CSV by --format or suffix).

`bench report --devices [RUN...] -o buyers.html`: the procurement view across boards (harness/report/buyers.py),
one run per board; with no RUN, the newest complete run of each target in the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_OK, InputError, UsageError
from harness.files import atomic_write_bytes, cannot_write, ensure_dir
from harness.names import shown
from harness.report.camera import DEFAULT_ALPHA
from harness.report.html import FORMATS, render, report_format
from harness.results.uri import store_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write an HTML/Markdown/CSV report of runs", description=__doc__)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids (or unique prefixes) or run directories")
    p.add_argument("--devices", action="store_true",
                   help="the procurement view across boards (HTML); no RUN: the newest complete run of each target")
    p.add_argument("--trend-since", default="30d", metavar="AGE|DATE",
                   help="with --devices: chart p90 and worst-group retention over the complete runs this recent "
                        "(default 30d; 'none' to leave trends out)")
    p.add_argument("--policy", type=Path, metavar="TOML",
                   help="with --devices: the buyer's procurement policy (target FMR, floors, retention, speed; "
                        "examples/procurement.toml; the 1:N watchlist search: [identification], "
                        "examples/watchlist.toml); default: target FMR 1e-3, 99%% retention per group and "
                        "target FPIR 0.01")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                   help="level of the camera section's paired tests: the first condition level whose change from "
                        "the unmodified image has p < A, and the int8 x condition interaction (default %(default)s; "
                        "docs/camera.md)")
    p.add_argument("-o", "--output", type=Path, help="output file ('-' or omitted: stdout)")
    p.add_argument("--format", choices=FORMATS, help="default: from the output suffix, else html")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    out = None if args.output in (None, Path("-")) else args.output
    if not args.runs and not args.devices:
        raise UsageError("report needs RUN ids/paths (or --devices for the newest run of each target)")
    if args.policy and not args.devices:
        raise UsageError("--policy goes with --devices (the buyer's page)")
    if not 0.0 < args.alpha < 1.0:  # also refuses nan
        raise UsageError(f"--alpha must be in (0, 1), got {args.alpha:g}")
    with store_from_args(args) as store:
        if args.devices:
            text = _devices(store, args)
        else:
            runs = [store.load(ref) for ref in args.runs]
            text = render(runs, report_format(out, args.format), alpha=args.alpha)
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


def _devices(store, args: argparse.Namespace) -> str:
    from harness.report import buyers
    from harness.report.trend import parse_since, trends

    if args.format not in (None, "html"):
        raise UsageError("--devices writes HTML only")
    from harness.report.procurement import load_policy

    policy = load_policy(args.policy) if args.policy else None  # read first: a bad policy costs no store reads
    runs = [store.load(ref) for ref in args.runs] or [store.newest(t) for t in store.targets()
                                                      if store.query(target=t, status="complete")]
    if not runs:
        raise UsageError(f"no complete runs in {store.uri}")
    series = []
    if args.trend_since != "none":
        since = parse_since(args.trend_since)
        history = [store.load_id(r.run_id) for run in runs
                   for r in store.query(target=run.target, since=since, status="complete")]
        if len(history) > len(runs):  # more than one run of some board: there is a trend to draw
            series = [(m, trends(history, m)) for m in ("p90_ms", "worst_group_retention")]
    return buyers.render(runs, store_uri=store.uri, trends=series, policy=policy)
