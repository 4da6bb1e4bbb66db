"""A one-board run that waits in labgrid's queue: the seconds from the place's release by its other holder to the
end of `bench run --pool`, on the loopback lab (tests/remote/lab.py: one sshd board published as a labgrid place
tagged target=fan; needs openssh-server and labgrid).

    python tools/queued_wall.py [--runs N] [--hold S] [--repo DIR ...]

The place is held by `labgrid-client acquire` (another user of the lab), `bench run --pool target=fan --pool-wait
120` is started, and the place is released `--hold` seconds later. What bench does while it waits (the host's
datasets and faces, harness/scenarios/host_faces.py) is no longer in the time after the release. The plan is
tools/fanout_wall.py's (6 entries, london-frl --limit 24, --min-duration 2). `--repo DIR`: time the checkout at
DIR as well (e.g. a `git worktree` of an older commit), in alternating order.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.paths import REPO_ROOT  # noqa: E402
from tests.remote.lab import Lab, Labgrid  # noqa: E402
from tools.fanout_wall import PLAN  # noqa: E402


def queued(repo: Path, lab: Lab, lg: Labgrid, results: Path, hold_s: float) -> float:
    """Seconds from the release of the held place to the end of bench run (which must exit 0)."""
    lg.client("-p", "fan-a", "acquire")
    env = dict(os.environ, PYTHONPATH=str(repo), BENCH_RESULTS=str(results))
    cmd = [sys.executable, "-m", "harness", *PLAN, "--limit", "24", "--min-duration", "2", "--pool", "target=fan",
           "--pool-wait", "120", "--coordinator", lg.address, "--inventory", str(lab.inventory)]
    released: list[float] = []

    def release() -> None:
        time.sleep(hold_s)
        lg.client("-p", "fan-a", "release")
        released.append(time.perf_counter())

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=repo)
    releaser = threading.Thread(target=release)
    releaser.start()
    err = proc.stderr.read()
    proc.wait()
    end = time.perf_counter()
    releaser.join()
    if proc.returncode != 0:
        sys.exit(f"bench run ({repo}) failed ({proc.returncode}): {err[-2000:]}")
    return end - released[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--repo", type=Path, action="append", default=[])
    args = ap.parse_args()
    repos = [REPO_ROOT, *args.repo]
    got: dict[Path, list[float]] = {r: [] for r in repos}
    with tempfile.TemporaryDirectory(prefix="queued-wall-") as tmp:
        (Path(tmp) / "lab").mkdir()
        lab = Lab(Path(tmp) / "lab")
        lg = None
        try:
            lab.add("fan-a", tags={"target": "fan"})
            (Path(tmp) / "lg").mkdir()
            lg = Labgrid(Path(tmp) / "lg", lab)
            queued(REPO_ROOT, lab, lg, Path(tmp) / "warm", 0.5)  # CAS on the board, page cache warm
            for i in range(args.runs):
                for repo in (repos if i % 2 == 0 else repos[::-1]):
                    s = queued(repo, lab, lg, Path(tmp) / f"r{i}-{len(got[repo])}-{repo.name}", args.hold)
                    got[repo].append(s)
                    print(f"  run {i + 1} {repo}: {s:.1f} s after the release (load {os.getloadavg()[0]:.1f})",
                          flush=True)
        finally:
            if lg is not None:
                lg.close()
            lab.close()
    for repo, s in got.items():
        print(f"{repo}: {', '.join(f'{x:.1f}' for x in s)} s from the release to the end "
              f"(median {statistics.median(s):.1f})")


if __name__ == "__main__":
    main()
