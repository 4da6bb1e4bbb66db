"""Wall time of a 2-board fan-out against one board for the same plan, on the loopback lab (tests/remote/lab.py:
two sshd boards published as labgrid places tagged target=fan; needs openssh-server and labgrid).

    python tools/fanout_wall.py [--runs N] [--limit N] [--min-duration S] [--boards N] [--emulated]

The plan: gender-dlib and blazeface, onnx fp32/fp16/int8 (6 entries), london-frl limited to --limit faces, one
thread per worker. Each repeat runs `bench run --pool target=fan` (one board) and `... --boards N` (default 2; the
lab gets N boards), in alternating order, and times the whole command (acquisition, entries, scoring), the boards
phase (from the command's start to the line saying which boards the fan-out got, or the first board's "healthy"
line: places taken, boards connected and health-checked) and the entries phase (from the first entry's start line to
the last entry's result line), each line stamped as it arrives. Prints each run and the ratios fan-out / one
board (issue 19's goal: <= 0.6), and the rest of the command (command - entries: start-up, boards, faces, scoring,
release), the part a fan-out does not divide: with E the entries phase on one board and R that rest, the whole
command's ratio is about (R + E x the entries' ratio) / (R + E), so it nears the entries' ratio as the entries
grow (`--min-duration`, slower boards); a larger `--limit` grows the host's faces, and so R, more than E. The loopback boards are this machine: both boards' workers share its cores (and whatever else runs
on it), so the figure measures the fan-out's scheduling and overlap, not two real boards' throughput
(docs/remote.md, "Fan-out"). With `--emulated` each board is the emulated aarch64 board behind its sshd (the
board's python runs under qemu-user in the cached arm64 root filesystem, as tests/remote/test_emulated_pool.py's
board; needs root, qemu-user-static, binfmt-support, mmdebstrap, arch-test) and the plan runs with `--target rpi`: a
board slower than its host, as a lab's boards are, so the entries outweigh the host's share. Its timings are INVALID
("emulated"); the wall times of the commands are what this tool reads.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.paths import REPO_ROOT, cache_root, data_root  # noqa: E402
from tests.remote.lab import Lab, Labgrid  # noqa: E402

PLAN = ["run", "--model", "gender-dlib", "--model", "blazeface", "--variant", "onnx-fp32",
        "--variant", "onnx-fp16", "--variant", "onnx-int8", "--dataset", "london-frl", "--threads", "1",
        "--bootstrap", "50", "--no-build"]


def run(lab: Lab, coordinator: str, results: Path, boards: int, limit: int, min_duration: float,
        target: str = "cpu") -> tuple[float, float, float]:
    """(seconds of the whole command, of its boards phase: from the start to the fan-out's "fan-out over" line or a
    one-board run's "healthy" line, and of its entries phase: from the first entry's "running on" line to the last
    entry's result line; each line stamped here as it arrives: bench writes plain lines to a pipe)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), BENCH_RESULTS=str(results))
    more = ["--boards", str(boards)] if boards > 1 else []
    cmd = [sys.executable, "-m", "harness", *PLAN, "--target", target, "--limit", str(limit),
           "--min-duration", str(min_duration),
           "--pool", "target=fan", "--coordinator", coordinator, "--inventory", str(lab.inventory), *more]
    t0 = time.perf_counter()
    first = last = connected = None
    tail: list[str] = []
    with open(results.with_suffix(".out"), "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            now = time.perf_counter()
            tail = (tail + [line])[-20:]
            if connected is None and ("fan-out over " in line if boards > 1 else " healthy (" in line):
                connected = now
            if ": running on " in line and first is None:
                first = now
            if ENTRY_DONE.match(line):
                last = now
        proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or first is None or last is None or connected is None:
        sys.exit(f"bench run --boards {boards} failed ({proc.returncode}): {''.join(tail)}")
    return wall, connected - t0, last - first


ENTRY_DONE = re.compile(r"^[\w.-]+--[\w.@-]+: (ok|failed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--min-duration", type=float, default=2.0)
    ap.add_argument("--boards", type=int, default=2, help="boards in the lab and in the fan-out (default 2)")
    ap.add_argument("--emulated", action="store_true", help="emulated aarch64 boards, the plan on --target rpi")
    args = ap.parse_args()
    n = args.boards
    print(f"{datetime.now().isoformat(timespec='seconds')} cache {cache_root().path} data {data_root().path} "
          f"cores {os.cpu_count()} load {os.getloadavg()[0]:.1f}", flush=True)
    walls: dict[int, list[float]] = {1: [], n: []}
    connects: dict[int, list[float]] = {1: [], n: []}
    phases: dict[int, list[float]] = {1: [], n: []}
    with tempfile.TemporaryDirectory(prefix="fanout-wall-") as tmp:
        (Path(tmp) / "lab").mkdir()
        lab = Lab(Path(tmp) / "lab")
        lg = None
        try:
            if args.emulated:
                from harness.launchers.arm64_board import DEFAULT_CPU, Arm64Board
                from harness.launchers.arm64_exec import write_shim

                Arm64Board(cache_root().path, log=lambda m: None).ensure()
            for i in range(n):
                board = lab.add(f"fan-{chr(ord('a') + i)}", runtimes=() if args.emulated else ("onnxruntime",),
                                tags={"target": "fan"})
                if args.emulated:
                    board.python = write_shim(board.dir / "python-arm64", workdir=board.workdir, cpu=DEFAULT_CPU,
                                              cache=cache_root().path)
            lab.write()
            target = "rpi" if args.emulated else "cpu"
            (Path(tmp) / "lg").mkdir()
            lg = Labgrid(Path(tmp) / "lg", lab)
            run(lab, lg.address, Path(tmp) / "warm", 1, args.limit, 0.2, target)  # CAS on the board, page cache warm
            for i in range(args.runs):
                for boards in ((1, n) if i % 2 == 0 else (n, 1)):
                    wall, connect, phase = run(lab, lg.address, Path(tmp) / f"r{i}-{boards}", boards, args.limit,
                                               args.min_duration, target)
                    walls[boards].append(wall)
                    connects[boards].append(connect)
                    phases[boards].append(phase)
                    print(f"  run {i + 1} boards={boards}: command {wall:.1f} s, boards phase {connect:.1f} s, "
                          f"entries {phase:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            if lg is not None:
                lg.close()
            lab.close()
    fixed = {k: [w - e for w, e in zip(walls[k], phases[k])] for k in walls}  # all but the entries: the host's share
    for what, d in (("command", walls), ("boards phase", connects), ("entries phase", phases),
                    ("rest (command - entries)", fixed)):
        one, two = statistics.median(d[1]), statistics.median(d[n])
        print(f"{what}: one board {', '.join(f'{w:.1f}' for w in d[1])} s; --boards {n} "
              f"{', '.join(f'{w:.1f}' for w in d[n])} s; --boards {n} / one board {two / one:.2f} (medians; per "
              f"repeat {', '.join(f'{b / a:.2f}' for a, b in zip(d[1], d[n]))})")


if __name__ == "__main__":
    main()
