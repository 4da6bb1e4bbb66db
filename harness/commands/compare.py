"""`bench compare RUN_A RUN_B ...`: side-by-side entries with deltas vs the first run, environment warnings (the
int8 kernel path among them) and the Pareto front (latency, worst-group error, energy).

`bench compare RUN_A RUN_B --drift`: the same packs on the same data on two machines (e.g. two x86 CPUs whose int8
kernel paths differ): output differences, decision flips per group with McNemar, FMR/FNMR per group at RUN_A's fp32
threshold (harness/report/drift.py)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from harness.errors import EXIT_OK, UsageError
from harness.report.compare import compare
from harness.report.console import user_table, user_text
from harness.results.uri import store_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="compare runs side by side", description=__doc__)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids (or unique prefixes) or run directories")
    p.add_argument("--target", action="append", default=[], metavar="T",
                   help="add the newest complete run of target T from the results store (repeatable), e.g. "
                        "--target cpu --target jetson for a side-by-side of two devices")
    p.add_argument("--drift", action="store_true",
                   help="exactly two runs of the same packs on the same data on two machines: per entry and group, "
                        "output differences, decision flips (McNemar) and FMR/FNMR at the first run's fp32 "
                        "threshold; refused (exit 2) when packs or data differ")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--md", action="store_true", help="print Markdown")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not args.runs and not args.target:
        raise UsageError("compare needs runs: give RUN ids/paths and/or --target T")
    with store_from_args(args) as store:
        if args.drift:  # drift reads each run's per-sample outputs: the whole runs
            return _drift([store.load(ref) for ref in args.runs] + [store.newest(t) for t in args.target], args)
        table = compare(_load(store, args.runs, args.target))
    if args.json:
        print(json.dumps(table.to_dict(), indent=1))
        return EXIT_OK
    if args.md:
        print(table.to_markdown())
        return EXIT_OK
    console = Console()
    for r in table.kernel_paths:
        console.print(user_text(f"{r['run']}: int8 kernel path {r['int8_label']} [{r['int8']}] "
                                f"(from the {r['machine']}'s fingerprint)"))
    for w in table.warnings:
        console.print(user_text(f"warning: {w}", style="yellow"))
    rows = table.long_rows()
    console.print(user_table(f"deltas vs {table.run_ids[0]}", list(rows[0] if rows else {"model": None}),
                             [[str(v) for v in r.values()] for r in rows], title_justify="left"))
    if table.cross_isa:
        console.print(user_table("cross-ISA precision loss (same pack, same inputs)", list(table.cross_isa[0]),
                                 [[str(v) for v in r.values()] for r in table.cross_isa], title_justify="left"))
    return EXIT_OK


def _drift(runs: list, args: argparse.Namespace) -> int:
    from harness.report.compare import paired_rows
    from harness.report.drift import drift

    if len(runs) != 2:
        raise UsageError(f"--drift compares exactly two runs (got {len(runs)})")
    block = drift(*runs)
    rows = paired_rows(block, block["run"])
    a, b = runs
    head = (f"drift of {b.run_id} against {a.run_id} ({'within' if block['within_isa'] else 'across'} ISA; int8 "
            f"kernel path {block['reference_kernel_path']} → {block['device_kernel_path']}"
            f"{'' if block['kernel_paths_differ'] else ', the same'}"
            + (f"; capture condition {block['reference_condition'] or 'none'} → {block['device_condition'] or 'none'}"
               if block.get("conditions_differ") else "") + ")")
    if args.json:
        print(json.dumps({"drift": block, "rows": rows}, indent=1, default=str))
        return EXIT_OK
    if args.md:
        from harness.report.tables import md_table

        print("\n".join([f"# {head}", "", md_table(list(rows[0]) if rows else ["entry"],
                                                  [list(r.values()) for r in rows]), ""]
                        + [f"- skipped {s['entry']}{' (' + s['dataset'] + ')' if s.get('dataset') else ''}: "
                           f"{s['reason']}" for s in block["skipped"]]))
        return EXIT_OK
    console = Console()
    console.print(user_table(head, list(rows[0]) if rows else ["entry"], [[str(v) for v in r.values()] for r in rows],
                             title_justify="left"))
    for s in block["skipped"]:
        console.print(user_text(f"skipped {s['entry']}: {s['reason']}", style="yellow"))
    return EXIT_OK


def _load(store, refs: list[str], targets: list[str]) -> list:
    """The runs to compare: from a store that keeps headline summaries (PostgreSQL), those (a few kB a run,
    harness/results/headline.py); else the runs themselves."""
    if not hasattr(store, "load_headlines"):
        return [store.load(ref) for ref in refs] + [store.newest(t) for t in targets]
    ids = [store.resolve(ref) for ref in refs]
    for t in targets:
        rows = store.query(target=t, status="complete")
        if not rows:
            store.newest(t)  # raises the usual "no complete run for target" error
        ids.append(rows[-1].run_id)
    return store.load_headlines(ids)
