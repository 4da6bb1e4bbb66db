"""The `python` of an emulated aarch64 board reached over SSH: the bridge between the SSH launcher / labgrid pool
(harness/launchers/ssh.py, pool.py) and the emulated board (harness/launchers/arm64_board.py).

  python -m harness.launchers.arm64_exec shim PATH --workdir DIR [--cpu CPU] [--cache-dir C]
      writes PATH, an executable to name as the board's `python` in the inventory (boards.toml);
  PATH ARGS...   (= python -m harness.launchers.arm64_exec exec --workdir DIR ... -- ARGS...)
      runs `python3 ARGS...` inside the board, in the same working directory.

The SSH launcher runs `<python> -m harness.device.health PROFILE` and, inside <workdir>/jobs/<id>/in,
`<python> -m harness worker job.json --out ../out --watch-stdin`; everything else it does on the board (mkdir, ls,
sha256sum, tar) is plain shell on the machine behind sshd. So the board's work folder (the CAS, the job folders) is
bind-mounted read-write at the SAME path inside the board (relative symlinks into cas/ resolve there too), HOME is
the ssh user's (health.py resolves the work folder under it), the harness source is the read-only /opt/bench/src of
every emulated run, and the process execs all the way down to the emulated python3 (stdin, the worker's lifeline,
is the ssh session's; killing the session or sshd kills the board's process and its mount namespace).

What the board says about itself: EMULATION_ENV holds the board's emulation block (Arm64Board.emulation, as JSON);
harness.environment.fingerprint records it and harness.device.health accepts the board for a profile's [board]
check ONLY as that emulated board (never as the real one), so the host marks every timing INVALID "emulated".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.environment import EMULATION_ENV
from harness.errors import BenchError
from harness.launchers.arm64_board import CPUS, DEFAULT_CPU, Arm64Board, enable_binfmt
from harness.paths import REPO_ROOT, cache_root


def board_argv(board: Arm64Board, workdir: Path, args: list[str], cwd: Path) -> list[str]:
    """The host command line that runs `python3 args` inside the board with `workdir` bound at its own path and
    `cwd` (which must lie under it, or be the home folder) as the working directory."""
    workdir = workdir.resolve()
    binds = [*board.binds(src=REPO_ROOT), (workdir, str(workdir), "rw")]
    env = {"HOME": os.environ.get("HOME", "/root"), EMULATION_ENV: json.dumps(board.emulation, sort_keys=True)}
    inside = cwd.resolve()
    if inside != workdir and workdir not in inside.parents:
        inside = workdir  # e.g. the ssh session's home: the health check needs no particular folder
    return board.command(["/usr/bin/env", "-C", str(inside), "python3", *args], binds=binds, env=env)


def write_shim(path: Path, *, workdir: Path, cpu: str, cache: Path) -> Path:
    """An executable that runs `python -m harness.launchers.arm64_exec exec ... -- "$@"` with this interpreter and
    this checkout."""
    from harness.files import write_python_command

    return write_python_command(path, "harness.launchers.arm64_exec",
                                ["exec", "--workdir", str(Path(workdir).resolve()), "--cpu", cpu,
                                 "--cache-dir", str(Path(cache).resolve()), "--"],
                                "The emulated aarch64 board's python (harness/launchers/arm64_exec.py).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.launchers.arm64_exec", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("exec", "shim"))
    p.add_argument("path", nargs="?", help="shim: the file to write")
    p.add_argument("--workdir", required=True, help="the board's work folder (the inventory's workdir), absolute")
    p.add_argument("--cpu", default=DEFAULT_CPU, choices=sorted(CPUS))
    p.add_argument("--cache-dir", help="cache folder holding the board (env BENCH_CACHE)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    a, args = p.parse_args(argv[:cut]), argv[cut + 1:]  # exec: the python arguments after --, untouched
    board = Arm64Board(cache_root(a.cache_dir).path, cpu=a.cpu, log=lambda m: print(m, file=sys.stderr))
    if a.command == "shim" and not a.path:
        p.error("shim needs PATH")
    try:
        if a.command == "shim":
            print(write_shim(Path(a.path), workdir=Path(a.workdir), cpu=a.cpu, cache=board.cache))
            return 0
        Path(a.workdir).mkdir(parents=True, exist_ok=True)  # the bind's source
        enable_binfmt()  # after a reboot binfmt_misc may be unmounted; the board itself must already be restored
        argv_ = board_argv(board, Path(a.workdir), args, Path.cwd())
    except BenchError as exc:
        print(f"arm64_exec: {exc.message}", file=sys.stderr)
        return exc.exit_code
    # mount, chroot and unshare live in sbin, which an ssh session's PATH may lack (a non-root user's default)
    os.environ["PATH"] = ":".join([os.environ.get("PATH") or "/usr/bin:/bin", "/usr/sbin", "/sbin"])
    os.execvp(argv_[0], argv_)


if __name__ == "__main__":
    sys.exit(main())
