"""`bench device provision DEVICE`: put this checkout's harness on a board, in a venv in its work folder, with the
device extra of the target's runtime, over SSH (harness/launchers/provision.py; docs/remote.md, "Provisioning a
board"). DEVICE is what `bench run --device` takes: user@host[:port] or a board NAME from the inventory.
`bench device provision --pool KEY=VAL [--boards N|all] [--jobs J]`: every matching labgrid place (or the first N),
each taken through the pool's lock, J at a time (harness/launchers/provision_pool.py; docs/remote.md,
"Provisioning a pool")."""

from __future__ import annotations

import argparse
import json
import time

from harness import runtimes
from harness.errors import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("device", help="provision a board: this harness and its device extra in a venv over SSH",
                              description=__doc__)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    prov = sub.add_parser("provision", help="build this checkout's wheel, send it and the pinned dependency wheels for "
                                            "the board's platform, install them in a venv on the board")
    prov.add_argument("device", metavar="USER@HOST[:PORT]|NAME", nargs="?",
                      help="the board, as bench run --device takes it (or --pool for a whole labgrid pool)")
    pool = prov.add_argument_group("a labgrid pool (docs/remote.md, \"Provisioning a pool\")")
    pool.add_argument("--pool", metavar="KEY=VAL[,KEY=VAL]",
                      help="provision every labgrid place whose tags match, each taken through the pool's lock (a "
                           "place another process holds is skipped, naming its holder: exit 3) and released after")
    pool.add_argument("--boards", metavar="N|all", default="all",
                      help="--pool: at most N places (the first by name), or all of them (default)")
    pool.add_argument("--jobs", type=int, metavar="J",
                      help="--pool: boards provisioned at once (default min(4, boards))")
    pool.add_argument("--coordinator", metavar="HOST[:PORT]",
                      help="labgrid coordinator (env LG_COORDINATOR; default 127.0.0.1:20408)")
    pool.add_argument("--pool-wait", type=float, default=0.0, metavar="S",
                      help="--pool: seconds to wait for a place another process holds (default 0: skip it)")
    prov.add_argument("--target", help="target profile whose runtime the board gets (default: the board's "
                                       "inventory tag target)")
    prov.add_argument("--runtime", choices=runtimes.names(),
                      help="which of the target's runtimes to install (default: the profile's first backend's)")
    prov.add_argument("--inventory", metavar="FILE",
                      help="boards file (env BENCH_INVENTORY; default ~/.config/edge-fair-bench/boards.toml)")
    prov.add_argument("--json", action="store_true", help="print the provision record as JSON only (--pool: a JSON "
                                                          "list, one record per place; the board lines on stderr)")
    prov.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from harness import specs
    from harness.launchers.provision import provision
    from harness.launchers.remote import board_for_device, inventory_path, load_inventory
    from harness.launchers.ssh import SSHLauncher
    from harness.paths import cache_root

    if (args.device is None) == (args.pool is None):
        raise UsageError("bench device provision: give one board (USER@HOST[:PORT]|NAME) or --pool KEY=VAL, not "
                         + ("both" if args.device else "neither"))
    if args.pool is not None:
        return run_pool(args)
    if args.boards != "all" or args.jobs is not None:
        raise UsageError("--boards and --jobs go with --pool")
    inv_path = inventory_path(args.inventory)
    board = board_for_device(args.device, load_inventory(inv_path), inv_path)
    target_id = args.target or board.tags.get("target")
    if not target_id:
        raise UsageError(f"bench device provision {args.device}: no --target and the board has no inventory tag "
                         "'target'; say which target profile's runtime it gets (e.g. --target rpi)")
    target = specs.get_target(target_id)
    log = (lambda m: None) if args.json else print
    launcher = SSHLauncher(board)
    t0 = time.perf_counter()
    try:
        state, record = provision(launcher, target, runtime=args.runtime, cache=cache_root(args.cache_dir).path,
                                  log=log)
    finally:
        launcher.close()
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"state": state, "seconds": round(wall, 2), "record": record}, indent=1))
        return EXIT_OK
    from harness.names import shown

    if state == "current":
        print(f"board {board.name}: already current (edge-fair-bench {shown(record['harness_version'])}, wheel "
              f"{shown(record['wheel_sha256'][:12])}, extra {shown(str(record.get('extra')))}, provisioned "
              f"{shown(record['time'])}); checked in {wall:.1f} s")
    else:
        print(json.dumps(record, indent=1))
        print(f"board {board.name}: provisioned in {wall:.1f} s (edge-fair-bench {record['harness_version']}, "
              f"extra {record['extra']}, {record['sent']['uploaded_files']} files / "
              f"{record['sent']['uploaded_bytes'] / 1e6:.1f} MB sent); python {record['venv']}/bin/python")
    return EXIT_OK


def run_pool(args: argparse.Namespace) -> int:
    """`--pool`: one line per place as it finishes (stdout; stderr with --json), a summary, exit the worst board's."""
    import sys

    from harness.launchers.pool import parse_filters
    from harness.launchers.provision_pool import exit_code, parse_boards, provision_pool, summary
    from harness.launchers.remote import inventory_path, load_inventory
    from harness.paths import cache_root

    filters = parse_filters(args.pool)
    boards = parse_boards(args.boards)
    if args.pool_wait < 0:
        raise UsageError(f"--pool-wait {args.pool_wait:g}: expected seconds >= 0")
    inv_path = inventory_path(args.inventory)
    out = sys.stderr if args.json else sys.stdout

    def detail(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def done(result) -> None:
        print(result.line(), file=out, flush=True)

    t0 = time.perf_counter()
    results = provision_pool(filters, coordinator=args.coordinator, inventory=load_inventory(inv_path),
                             target_id=args.target, runtime=args.runtime, cache=cache_root(args.cache_dir).path,
                             boards=boards, jobs=args.jobs, pool_wait_s=args.pool_wait, log=detail, on_done=done)
    print(summary(results, filters, time.perf_counter() - t0), file=out, flush=True)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    return exit_code(results)
