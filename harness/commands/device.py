"""`bench device provision DEVICE`: put this checkout's harness on a board, in a venv in its work folder, with the
device extra of the target's runtime, over SSH (harness/launchers/provision.py; docs/remote.md, "Provisioning a
board"). DEVICE is what `bench run --device` takes: user@host[:port] or a board NAME from the inventory."""

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
    prov.add_argument("device", metavar="USER@HOST[:PORT]|NAME", help="the board, as bench run --device takes it")
    prov.add_argument("--target", help="target profile whose runtime the board gets (default: the board's "
                                       "inventory tag target)")
    prov.add_argument("--runtime", choices=runtimes.names(),
                      help="which of the target's runtimes to install (default: the profile's first backend's)")
    prov.add_argument("--inventory", metavar="FILE",
                      help="boards file (env BENCH_INVENTORY; default ~/.config/edge-fair-bench/boards.toml)")
    prov.add_argument("--json", action="store_true", help="print the provision record as JSON only")
    prov.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from harness import specs
    from harness.launchers.provision import provision
    from harness.launchers.remote import board_for_device, inventory_path, load_inventory
    from harness.launchers.ssh import SSHLauncher
    from harness.paths import cache_root

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
