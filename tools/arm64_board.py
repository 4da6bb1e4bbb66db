#!/usr/bin/env python3
"""Build, restore and use the emulated aarch64 board (harness/launchers/arm64_board.py) by hand.

  python tools/arm64_board.py install-tools   # apt-get install qemu-user-static binfmt-support mmdebstrap arch-test ... (root)
  python tools/arm64_board.py ensure          # build (cold) or restore (warm) the board; prints the timings as JSON
  python tools/arm64_board.py check           # python3 inside imports onnxruntime and ai_edge_litert; prints versions
  python tools/arm64_board.py run -- CMD ...  # any command inside the board (harness source at /opt/bench/src)

The cache folder is BENCH_CACHE (default ~/.cache/edge-fair-bench); --cpu picks the emulated core.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.errors import BenchError  # noqa: E402
from harness.launchers.arm64_board import CPUS, DEFAULT_CPU, HOST_TOOLS, Arm64Board  # noqa: E402
from harness.paths import REPO_ROOT, cache_root  # noqa: E402

CHECK = ("import json, platform, onnxruntime, ai_edge_litert, numpy, psutil, importlib.metadata as m; "
         "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
         "'onnxruntime': onnxruntime.__version__, 'providers': onnxruntime.get_available_providers(), "
         "'ai_edge_litert': m.version('ai-edge-litert'), 'numpy': numpy.__version__, "
         "'psutil': psutil.__version__}))")


def install_tools() -> int:
    pkgs = sorted(set(HOST_TOOLS.values()))
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    return subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], check=False,
                          env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="arm64_board", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("install-tools", "ensure", "check", "run"))
    p.add_argument("--cpu", default=DEFAULT_CPU, choices=sorted(CPUS))
    p.add_argument("--cache-dir", help="cache folder (env BENCH_CACHE)")
    p.add_argument("argv", nargs="*", help="the command for `run` (after --)")
    a = p.parse_args(argv)
    if a.command == "install-tools":
        return install_tools()
    board = Arm64Board(cache_root(a.cache_dir).path, cpu=a.cpu, log=lambda m: print(m, file=sys.stderr))
    try:
        if a.command == "ensure":
            print(json.dumps(board.ensure(), indent=1, default=list))
            return 0
        board.ensure()
        done = board.run(["python3", "-c", CHECK] if a.command == "check" else a.argv, src=REPO_ROOT)
    except BenchError as exc:
        print(f"arm64_board: {exc}", file=sys.stderr)
        return exc.exit_code
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
