"""`bench pool`: the labgrid places (boards) a run can take, their tags and who holds them; `bench pool release
--stale` releases places held by bench processes of this host that are gone (harness/launchers/pool.py)."""

from __future__ import annotations

import argparse
import json

from harness.errors import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pool", help="list the labgrid places (boards), their tags and holders; release stale "
                                           "holders", description=__doc__)
    p.add_argument("action", nargs="?", choices=("list", "release"), default="list",
                   help="list (default) or release")
    p.add_argument("--stale", action="store_true",
                   help="release: every place held by a bench process of this host that no longer exists")
    p.add_argument("--coordinator", metavar="HOST[:PORT]",
                   help="labgrid coordinator (env LG_COORDINATOR; default 127.0.0.1:20408)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from harness.launchers.pool import Pool

    pool = Pool(args.coordinator)
    if args.action == "release":
        if not args.stale:
            raise UsageError("bench pool release needs --stale (a place held by a live process is released by that "
                             "process, or with labgrid-client release --kick)")
        kicked = pool.release_stale()
        for place, holder in kicked:
            print(f"released {place} (held by {holder}, a bench process that is gone)")
        if not kicked:
            print("no stale holders")
        return EXIT_OK
    places = [p.to_dict() for p in pool.places()]
    if args.json:
        print(json.dumps(places, indent=1))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("place", "tags", "held by", "holder alive", "board (NetworkService)", title=f"labgrid {pool.address}")
    for p in places:
        ns = p["network_service"]
        alive = {True: "yes", False: "NO (stale)", None: "-"}[p["holder_alive"]] if p["acquired"] else ""
        table.add_row(p["name"], " ".join(f"{k}={v}" for k, v in sorted(p["tags"].items())), p["acquired"] or "free",
                      alive, f"{ns.get('username')}@{ns.get('address')}:{ns.get('port')}" if ns else "")
    Console().print(table)
    return EXIT_OK
