"""`python -m harness` and the `bench` console script.

Start-up is interruptible like the rest (issue 17, item 13): SIGTERM is turned into KeyboardInterrupt before
anything else is imported, and an interrupt while harness.cli (or, inside main(), the command's module) is still
importing ends as every other one does: `bench: interrupted`, exit 130 (EXIT_INTERRUPTED), no traceback.
"""

import signal
import sys

_EXIT_INTERRUPTED = 130  # harness.errors.EXIT_INTERRUPTED, not imported: this module runs before any import


def _terminate(signum, frame):
    raise KeyboardInterrupt


HOST_FLOOR = (3, 10)  # pyproject.toml installs on 3.8+ for the device side; the host side needs 3.10+


def entry() -> int:
    if sys.version_info < HOST_FLOOR:  # before harness.cli, whose modules use 3.10 syntax, is imported
        if sys.argv[1:2] == ["worker"]:  # the device side, as every launcher starts it on a board: runs on 3.8+
            import runpy

            sys.argv = ["python -m harness.device", *sys.argv[2:]]
            runpy.run_module("harness.device", run_name="__main__", alter_sys=True)  # exits with the worker's code
        print(f"bench: unavailable on this machine: the host side needs Python "
              f"{'.'.join(map(str, HOST_FLOOR))} or newer, this is {sys.version.split()[0]}; on a board this "
              "install runs jobs only: `bench worker` or `python -m harness.device` (docs/architecture.md, "
              "\"Lean device install\")",
              file=sys.stderr)
        return 3  # harness.errors.EXIT_UNAVAILABLE
    try:
        signal.signal(signal.SIGTERM, _terminate)
        from harness.cli import main

        return main()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(entry())
