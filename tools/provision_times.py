"""Time `bench device provision` on a loopback sshd board (tests/remote/lab.py; needs openssh-server, PyPI).

    python tools/provision_times.py [--runs N]
    python tools/provision_times.py --pool N [--runs R]

Per run, a fresh board and an empty harness cache (a temporary --cache-dir): (1) everything cold: the wheel built,
the dependency wheels downloaded (pip's own HTTP cache as it is), sent and installed; (2) the same board again:
"already current"; (3) a second fresh board with the host's cache now warm: sent and installed only. Prints one
line per case with the seconds of each run (docs/remote.md, "Provisioning a board").

`--pool N` (needs labgrid too): per run, the host's cache warmed on one board first, then N fresh boards provisioned
one `bench device provision NAME` after the other, and N other fresh boards (labgrid places tagged set=pool) by one
`bench device provision --pool set=pool`; prints both walls and their ratio (docs/remote.md, "Provisioning a pool").
The loopback boards are this machine: their pip installs share its cores, so the ratio shows the overlap this host
allows, not what N real boards give.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.paths import REPO_ROOT  # noqa: E402
from tests.remote.lab import Lab  # noqa: E402


def provision(lab: Lab, name: str, cache: Path) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "--cache-dir", str(cache), "device", "provision", name,
                           "--target", "cpu", "--inventory", str(lab.inventory)], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"provision {name} failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall, proc.stdout.strip().splitlines()[-1]


def pool_times(n: int, runs: int) -> None:
    from tests.remote.lab import Labgrid

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="prov-times-") as tmp:
            for sub in ("lab", "lg"):
                (Path(tmp) / sub).mkdir()
            lab, lg = Lab(Path(tmp) / "lab"), None
            try:
                cache = Path(tmp) / "cache"
                lab.add("warm")
                provision(lab, "warm", cache)  # the wheel built and the wheelhouse filled: both cases start warm
                for j in range(n):
                    lab.add(f"seq{j}", tags={"target": "cpu", "set": "seq"})
                    lab.add(f"pool{j}", tags={"target": "cpu", "set": "pool"})
                lg = Labgrid(Path(tmp) / "lg", lab)
                t0 = time.perf_counter()
                for j in range(n):
                    provision(lab, f"seq{j}", cache)
                seq = time.perf_counter() - t0
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "harness", "--cache-dir", str(cache), "device",
                                       "provision", "--pool", "set=pool", "--coordinator", lg.address, "--inventory",
                                       str(lab.inventory)], capture_output=True, text=True, env=env)
                pool = time.perf_counter() - t0
                if proc.returncode != 0:
                    sys.exit(f"provision --pool failed ({proc.returncode}): {proc.stdout}{proc.stderr.strip()}")
                print(proc.stdout.rstrip())
                print(f"run {i + 1}: {n} new boards, host cache warm: one after the other {seq:.1f} s, --pool "
                      f"{pool:.1f} s, --pool / one after the other {pool / seq:.2f} (load {os.getloadavg()[0]:.1f}, "
                      f"{os.cpu_count()} cores)", flush=True)
            finally:
                if lg is not None:
                    lg.close()
                lab.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--pool", type=int, metavar="N", help="time N boards one after the other against one --pool")
    args = ap.parse_args()
    if args.pool:
        pool_times(args.pool, args.runs)
        return
    cases: dict[str, list[float]] = {"cold (host cache empty, board new)": [], "already current": [],
                                     "board new, host cache warm": []}
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="prov-times-") as tmp:
            lab = Lab(Path(tmp))
            try:
                cache = Path(tmp) / "cache"
                for case, name in zip(cases, (f"a{i}", f"a{i}", f"b{i}")):
                    if name not in lab.boards:
                        lab.add(name)
                    wall, last = provision(lab, name, cache)
                    cases[case].append(wall)
                    print(f"  run {i + 1} {case}: {wall:.1f} s ({last})", flush=True)
            finally:
                lab.close()
    for case, walls in cases.items():
        print(f"{case}: {', '.join(f'{w:.1f}' for w in walls)} s (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
