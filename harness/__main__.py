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


def entry() -> int:
    try:
        signal.signal(signal.SIGTERM, _terminate)
        from harness.cli import main

        return main()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(entry())
