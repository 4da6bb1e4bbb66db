"""`bench`: argument parsing and dispatch only. Each subcommand lives in harness/commands/<name>.py.

Exit codes are defined in harness/errors.py and documented in README.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harness import __version__
from harness.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, BenchError

COMMANDS = ("models", "targets", "data", "run", "runs", "compare", "report", "gate")

EPILOG = """exit codes: 0 ok | 1 failure | 2 usage or input error | 3 unavailable on this machine |
4 integrity (checksum, corrupt file) | 5 offline | 10 gate: performance regression |
11 gate: fairness regression | 12 gate: both | 130 interrupted"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line + exit 2, like every other usage error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="Benchmark face models on edge hardware for speed and demographic "
                     "fairness across fp32/fp16/int8.", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    parser.add_argument("--cache-dir", metavar="DIR", help="model cache (env BENCH_CACHE; default ~/.cache/edge-fair-bench)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the datasets (env BENCH_DATA; default ../shared/data)")
    parser.add_argument("--results-dir", metavar="DIR", help="where runs are written (env BENCH_RESULTS; default ./results)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"harness.commands.{name}").register(sub)
    return parser


GLOBAL_OPTIONS = ("--cache-dir", "--data-root", "--results-dir")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Let the root options appear anywhere (`bench run --results-dir X` as well as `bench --results-dir X run`).

    argparse only accepts root options before the subcommand; users and CI scripts put them after it.
    """
    front, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in arg:
                front.append(arg)
            else:
                front.extend(argv[i:i + 2])
                i += 1
        elif arg == "--":
            rest.extend(argv[i:])
            break
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _terminate(signum, frame):
    # SIGTERM (a CI job cancelled, `kill`) ends a run like Ctrl-C: the run directory stays resumable.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    previous = signal.signal(signal.SIGTERM, _terminate) if threading_is_main() else None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(hoist_global_options(list(sys.argv[1:] if argv is None else argv)))
    try:
        code = args.func(args)
    except BenchError as exc:
        print(f"bench: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILURE
    return int(code or 0)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
