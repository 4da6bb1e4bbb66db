"""`bench targets`: each target profile and whether this machine can run it."""

from __future__ import annotations

import json

from harness.targets import target_status


def register(sub) -> None:
    p = sub.add_parser("targets", help="list hardware targets and whether they are available here",
                       description="List target profiles (targets/*.toml) with availability on this machine.")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = target_status()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console

    from harness.report.console import user_table

    Console().print(user_table("targets", ("target", "available", "backends", "reason"),
                               [(r["target"], "yes" if r["available"] else "no",
                                 "; ".join(f"{b['runtime']}:{b['requested']}" for b in r["backends"]), r["reason"] or "")
                                for r in rows]))
    return 0
