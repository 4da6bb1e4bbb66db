"""`bench store push RUN... [--all] --store URI`: copy local runs into a results store (e.g. a lab's PostgreSQL).

Runs are read from the local results folder (--results-dir / $BENCH_RESULTS / ./results; a RUN may also be a run
directory anywhere) and written to the store that --store / $BENCH_STORE names, each run in one transaction: a run
already there with the same run.json is left alone, a changed one (a partial run since completed) is replaced.
"""

from __future__ import annotations

import argparse
import sys

from harness.errors import EXIT_OK, UsageError
from harness.paths import results_root
from harness.results.files import FileStore
from harness.results.uri import open_store, store_uri


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("store", help="copy local runs into a results store (e.g. a lab's PostgreSQL)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    push = sub.add_parser("push", help="copy local runs into the store given by --store / $BENCH_STORE",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_argument("runs", nargs="*", metavar="RUN", help="local run ids (or unique prefixes) or run directories")
    push.add_argument("--all", action="store_true", help="push every run in the local results folder")
    push.add_argument("--status", choices=("complete", "partial", "failed"),
                      help="with --all: only runs with this status")
    push.set_defaults(func=run_push)
    return p


def run_push(args: argparse.Namespace) -> int:
    if not args.runs and not args.all:
        raise UsageError("store push needs RUN ids/directories or --all")
    local = FileStore(results_root(args.results_dir).path)
    dest_uri = store_uri(args.store)
    if dest_uri == local.uri:
        raise UsageError(f"store push copies runs from {local.uri} into another store: name it with --store URI "
                         "or $BENCH_STORE (e.g. postgresql://host/db)")
    refs = list(args.runs)
    if args.all:
        refs += [r.run_id for r in local.query(status=args.status) if r.run_id not in refs]
    runs = [local.load(ref) for ref in refs]  # every RUN is checked before anything is written
    with open_store(dest_uri, results_dir=args.results_dir) as dest:
        for run in runs:
            outcome = dest.put(run)
            print(f"{outcome:9s} {run.run_id} ({run.doc['status']}) -> {dest.uri}")
    print(f"pushed {len(runs)} run(s)", file=sys.stderr)
    return EXIT_OK
