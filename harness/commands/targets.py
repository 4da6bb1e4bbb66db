"""`bench targets [list]`: each target profile, where it came from (built-in or a lab's folder on
$BENCH_TARGETS_PATH) and whether this machine can run it."""

from __future__ import annotations

import json

from harness.targets import target_status


def register(sub) -> None:
    p = sub.add_parser("targets", help="list hardware targets, where each profile came from, and whether it is "
                                       "available here",
                       description="List target profiles (built-in targets/*.toml, then each folder of "
                                   "BENCH_TARGETS_PATH) with where each came from and its availability on this "
                                   "machine.")
    p.add_argument("action", nargs="?", choices=("list",), default="list", help="list (the default)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = target_status()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console

    from harness.report.console import user_table

    Console().print(user_table("targets", ("target", "from", "available", "backends", "reason"),
                               [(r["target"], r["source"], "yes" if r["available"] else "no",
                                 "; ".join(f"{b['runtime']}:{b['requested']}" for b in r["backends"]), r["reason"] or "")
                                for r in rows]))
    return 0
