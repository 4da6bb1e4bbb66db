"""`bench`: argument parsing and dispatch only. Each subcommand lives in harness/commands/<name>.py.

Exit codes are defined in harness/errors.py and documented in README.md.

Lazy: only the module of the command being run is imported (`bench --help` imports none, `bench worker` imports
only the device side), so the CLI starts in ~0.1 s and a device install without pandas/scipy/rich can run
`bench worker`. The one-line help of every command lives in COMMANDS (tests/unit/test_cli.py checks it equals the
help each module registers).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sqlite3
import sys
import warnings

from harness import __version__
from harness.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, BenchError

COMMANDS = {
    "models": "list or build model packs (fp32/fp16/int8 x ONNX/TFLite)",
    "targets": "list hardware targets, where each profile came from, and whether it is available here",
    "data": "list, register, verify and fetch datasets",
    "run": "run the benchmark on a target (speed + per-group accuracy)",
    "score": "re-score a stored run from its raw outputs (no device)",
    "runs": "list recorded runs",
    "compare": "compare runs side by side",
    "report": "write an HTML/Markdown/CSV report of runs",
    "gate": "check a run against a policy (CI)",
    "store": "copy local runs into a results store (e.g. a lab's PostgreSQL)",
    "trend": "per-board trends over nightly runs, with change points flagged",
    "export": "export runs' run, entry, speed, rate and identification rows as Parquet or CSV",
    "worker": "run one benchmark job on this device (launched by bench run; rarely by hand)",
    "device": "provision a board: this harness and its device extra in a venv over SSH",
    "pool": "list the labgrid places (boards), their tags and holders; release stale holders",
}

EPILOG = """exit codes: 0 ok | 1 failure | 2 usage or input error | 3 unavailable on this machine |
4 integrity (checksum, corrupt file) | 5 offline | 10 gate: performance regression |
11 gate: fairness regression | 12 gate: both | 130 interrupted"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line + exit 2, like every other usage error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def selected_command(argv: list[str]) -> str | None:
    """The subcommand named in (hoisted) argv, skipping the global options and their values; None if there is none."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            i += 1 if "=" in arg else 2
            continue
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
        i += 1
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for argv: the selected command fully registered, the others as one help line each.

    With argv None every command module is imported and registered (the whole tree, for tests and docs).
    """
    parser = _Parser(prog="bench", description="Benchmark face models on edge hardware for speed and demographic "
                     "fairness across fp32/fp16/int8.", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    parser.add_argument("--cache-dir", metavar="DIR", help="model cache (env BENCH_CACHE; default ~/.cache/edge-fair-bench)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the datasets (env BENCH_DATA; default ../shared/data)")
    parser.add_argument("--results-dir", metavar="DIR", help="where runs are written (env BENCH_RESULTS; default ./results)")
    parser.add_argument("--store", metavar="URI", help="results store read by runs/compare/report/gate/trend/export "
                        "and written through by run: file://DIR or postgresql://... (env BENCH_STORE; default "
                        "file:// + the results dir)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = set(COMMANDS) if argv is None else {selected_command(argv)}
    for name, help_line in COMMANDS.items():
        if name in wanted:
            importlib.import_module(f"harness.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


GLOBAL_OPTIONS = ("--cache-dir", "--data-root", "--results-dir", "--store")


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
    formatwarning = warnings.formatwarning
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = formatwarning  # main() called in-process (tests) leaves the caller's as it was
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# OS refusals that mean "the path you gave cannot be used" (usage/input, exit 2) rather than a fault of the harness.
_PATH_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                          errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP})


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    # A warning is one line on stderr like an error, not a source excerpt.
    from harness.names import shown

    return f"bench: warning: {shown(message)}\n"


def fallback_error(exc: BaseException) -> tuple[str, int] | None:
    """The last line of defence, for an OS/encoding/SQLite error that escaped a command without being turned into a
    BenchError at its site (the sites name their paths; this names what the exception knows): one line + exit code.
    None for anything else, which stays a traceback: a bug to fix, not to hide."""
    from harness.names import shown

    if isinstance(exc, OSError) and exc.errno is not None:
        # shutil.copyfile names the source first; for a full disk the destination (filename2) is the one at fault.
        name = exc.filename2 if exc.errno == errno.ENOSPC and exc.filename2 else exc.filename
        where = f"{shown(name)}: " if name is not None else ""
        return f"{where}{exc.strerror or exc}", (EXIT_USAGE if exc.errno in _PATH_ERRNOS else EXIT_FAILURE)
    if isinstance(exc, UnicodeError):
        what = shown(exc.object[max(0, exc.start - 20):exc.end + 20]) if isinstance(exc, (UnicodeDecodeError,
                                                                                          UnicodeEncodeError)) else ""
        return f"text that is not valid UTF-8{f' near {what!r}' if what else ''} ({exc.reason})", EXIT_USAGE
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc)
        readonly = "readonly" in message or "unable to open" in message
        return f"results index: {message}", (EXIT_USAGE if readonly else EXIT_FAILURE)
    return None


def _main(argv: list[str] | None) -> int:
    try:
        # Parsing imports the command's module (numpy, pandas, ...): an interrupt there is an interrupt too.
        argv = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    warnings.formatwarning = _one_line_warning
    try:
        code = args.func(args)
    except BenchError as exc:
        from harness.names import shown

        # shown(): a message quoting a non-UTF-8 file name or a control character still prints as one line.
        print(f"bench: error: {shown(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except (OSError, UnicodeError, sqlite3.OperationalError) as exc:
        if isinstance(exc, BrokenPipeError):
            return EXIT_FAILURE
        mapped = fallback_error(exc)
        if mapped is None:
            raise
        print(f"bench: error: {mapped[0]}", file=sys.stderr)
        return mapped[1]
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
