"""`bench gate --policy policy.toml [--baseline RUN ...] RUN [--junit out.xml]`: CI pass/fail on a run.

A baseline must come from the run's board (the policy's [baseline] match: board, model or tag:KEY; the same target
and emulated-or-real always): another is refused with exit 2 naming both. Give --baseline once per board of a pool
and the gate takes the one measured on the run's board.

Exit 0 pass, 10 performance regression, 11 fairness/accuracy regression, 12 both (harness/errors.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.files import atomic_write_bytes, cannot_write, ensure_dir
from harness.report.board import board_of
from harness.report.gate import gate, load_policy, outcome_lines, select_baseline
from harness.results.uri import store_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gate", help="check a run against a policy (CI)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run id (or unique prefix) or run directory")
    p.add_argument("--policy", required=True, type=Path, help="policy TOML ([[check]] tables)")
    p.add_argument("--baseline", metavar="RUN", action="append",
                   help="baseline run (latency checks, entries the run lost); repeat it with one baseline per board: "
                        "the gate takes the one measured on the run's board")
    p.add_argument("--junit", type=Path, metavar="OUT.xml", help="also write JUnit XML (one testcase per check per entry)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)  # parse (and reject a bad policy) before loading runs
    with store_from_args(args) as store:
        current = store.load(args.run)
        baseline = None
        if args.baseline:
            baseline = select_baseline(policy, current, [store.load(b) for b in args.baseline])
            print(f"baseline {baseline.run_id}: {board_of(baseline.doc).describe(policy.baseline.match)}")
        result = gate(policy, current, baseline)  # latency checks fetch raw timings from the store
    if args.junit:
        import xml.etree.ElementTree as ET

        ensure_dir(args.junit.parent, "JUnit output folder")
        data = ET.tostring(result.to_junit().getroot(), encoding="utf-8", xml_declaration=True)
        try:
            atomic_write_bytes(args.junit, data)
        except OSError as exc:
            raise cannot_write(args.junit, exc, "JUnit output") from None
    for line in outcome_lines(result):
        print(line, file=sys.stderr if line.startswith("FAIL") else sys.stdout)
    return result.exit_code
