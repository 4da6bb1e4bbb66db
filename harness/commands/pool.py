"""`bench pool`: the labgrid places (boards) a run can take, their tags, who holds them, their power meters (sigrok
resources: name, class, availability) and which are out of service;
`bench pool release --stale` releases places held by bench processes of this host that are gone; `bench pool return
PLACE` brings an out-of-service place back; `bench pool power PLACE on|off|cycle` switches its board through the
inventory's power commands or, without them, the place's NetworkPowerPort, PDUDaemonPort or NetworkUSBPowerPort
from its exporter (harness/launchers/pool.py, harness/launchers/power.py, harness/launchers/netpower.py)."""

from __future__ import annotations

import argparse
import json

from harness.errors import EXIT_OK, UnavailableError, UsageError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pool", help="list the labgrid places (boards), their tags and holders; release stale "
                                           "holders", description=__doc__)
    p.add_argument("action", nargs="?", choices=("list", "release", "return", "power"), default="list",
                   help="list (default), release --stale, return PLACE, power PLACE on|off|cycle")
    p.add_argument("place", nargs="?", help="return/power: the labgrid place")
    p.add_argument("switch", nargs="?", choices=("on", "off", "cycle"), help="power: what to do")
    p.add_argument("--inventory", metavar="FILE",
                   help="power: boards file with the place's power commands (env BENCH_INVENTORY)")
    p.add_argument("--stale", action="store_true",
                   help="release: every place held by a bench process of this host that no longer exists")
    p.add_argument("--coordinator", metavar="HOST[:PORT]",
                   help="labgrid coordinator (env LG_COORDINATOR; default 127.0.0.1:20408)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from harness.launchers.pool import Pool

    if args.action in ("return", "power") and not args.place:
        raise UsageError(f"bench pool {args.action} needs a PLACE (bench pool lists them)")
    if args.action != "power" and args.switch:
        raise UsageError(f"bench pool {args.action}: unexpected {args.switch!r}")
    if args.action == "power":
        return _power(args)
    pool = Pool(args.coordinator)
    if args.action == "return":
        place = pool.return_to_service(args.place)
        was = place.out_of_service
        print(f"{place.name} is back in service" + (f" (was out of service {was})" if was else
                                                    " (it was not out of service)"))
        return EXIT_OK
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

    from rich.markup import escape

    table = Table(*HEADERS, title=f"labgrid {pool.address}")
    for row in table_rows(places):  # names, tags, comments, resources come from the coordinator: data, never markup
        table.add_row(*(escape(x) for x in row))
    Console().print(table)
    return EXIT_OK


HEADERS = ("place", "tags", "held by", "holder alive", "board (NetworkService)", "meters", "service")


def meters_cell(meters: dict) -> str:
    """A place's power meters (the sigrok resources it matches or holds, harness/launchers/sigrok_meter.py) as one
    cell: "NAME (CLASS, available)" each, UNAVAILABLE where its exporter has it offline; what `--json` gives as
    `meters`. A resource whose record is not the pool's shape is named with "?" for what is missing."""
    out = []
    for name, m in sorted((meters or {}).items()):
        m = m if isinstance(m, dict) else {}
        avail = {True: "available", False: "UNAVAILABLE"}.get(m.get("avail"), "availability ?")
        out.append(f"{name} ({m.get('cls') or '?'}, {avail})")
    return "; ".join(out)


def table_rows(places: list[dict]) -> list[list[str]]:
    """`bench pool`'s table (HEADERS) from Place.to_dict() of each place, as plain text (the caller escapes it)."""
    rows = []
    for p in places:
        ns = p["network_service"]
        alive = {True: "yes", False: "NO (stale)", None: "-"}[p["holder_alive"]] if p["acquired"] else ""
        service = (f"OUT: {p['out_of_service']}" if p["out_of_service"] else
                   f"in ({p['infra_failures']} infrastructure failure{'s' if p['infra_failures'] != 1 else ''} "
                   "in a row)" if p["infra_failures"] else "in")
        rows.append([str(x) for x in (
            p["name"], " ".join(f"{k}={v}" for k, v in sorted(p["tags"].items())), p["acquired"] or "free", alive,
            f"{ns.get('username')}@{ns.get('address')}:{ns.get('port')}" if ns else "", meters_cell(p.get("meters")),
            service)])
    return rows


def _power(args: argparse.Namespace) -> int:
    """Switch a place's board with its inventory power commands (a person's `labgrid-client power`)."""
    from harness.launchers.netpower import USBHubPortSpec
    from harness.launchers.power import switch
    from harness.launchers.remote import inventory_path, load_inventory, power_for

    if not args.switch:
        raise UsageError("bench pool power PLACE needs on, off or cycle")
    inv_path = inventory_path(args.inventory)
    spec = power_for(args.place, load_inventory(inv_path), inv_path)
    if spec is None:  # the place's power port, as its exporter publishes it (harness/launchers/netpower.py)
        spec = _exported_power(args)
    if spec is None:
        raise UsageError(f"place {args.place!r} has no power commands in the inventory ({inv_path or 'none found'}; "
                         "[boards.PLACE] power = { cmd_on = ..., cmd_off = ..., cmd_cycle = ... }, docs/remote.md) "
                         "and its exporter publishes no NetworkPowerPort, PDUDaemonPort or NetworkUSBPowerPort")
    if isinstance(spec, USBHubPortSpec):
        took = _switch_held(args, spec)
    else:
        took = switch(spec, args.place, args.switch)
    print(f"{args.place}: power {args.switch} done in {took:.1f} s ({spec.source})")
    return EXIT_OK


def _switch_held(args: argparse.Namespace, spec) -> float:
    """A USB hub port is switched by labgrid-client for the place's holder (netpower.USBHubPortSpec): the place is
    taken for the switching (at once, or exit 3 naming who holds it) and given back, also on failure."""
    from harness.launchers.pool import Pool
    from harness.launchers.power import switch
    from harness.names import shown

    pool = Pool(args.coordinator)
    held = next((p.acquired for p in pool.places() if p.name == args.place and p.acquired), None)
    if held:
        raise UnavailableError(f"place {args.place!r} is held by {shown(held)}: its USB hub port is switched by "
                               "labgrid for the place's holder only (bench pool release --stale frees a dead run's "
                               "place)")
    lease = pool.acquire({"name": args.place}, wait_s=10)
    try:
        return switch(spec.held_by(lease.place, lease.coordinator, lease.holder), args.place, args.switch)
    finally:
        pool.release(lease)


def _exported_power(args: argparse.Namespace):
    """The power port of the place at the coordinator (netpower.exported_switch), or None (no such place, none
    published; a coordinator that does not answer is exit 3)."""
    from harness.launchers.netpower import exported_switch
    from harness.launchers.pool import Pool

    place = next((p for p in Pool(args.coordinator).places() if p.name == args.place), None)
    spec, problem = exported_switch(place.exported) if place is not None else (None, None)
    if problem:
        raise UsageError(f"place {args.place!r}: {problem}")
    return spec
