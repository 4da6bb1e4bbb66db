"""Tie a worker's life to its parent's: a worker never outlives the process that launched it.

Issue 10: `kill -9` of `bench run` left its worker running (PPID 1), writing into the run folder until a
BrokenPipeError. Two independent guards, both armed by the launcher's flags:

- `--parent-pid PID` (Linux): prctl(PR_SET_PDEATHSIG, SIGKILL) makes the kernel kill the worker the moment its
  parent dies (prctl(2)); the worker then checks getppid() == PID, because the parent may have died before the
  prctl call (the documented race). A thread also polls getppid() every 100 ms for kernels/platforms without
  PR_SET_PDEATHSIG.
- `--watch-stdin`: the launcher holds the write end of the worker's stdin and never writes; EOF means the
  launcher is gone (killed, or an SSH connection dropped), and the worker exits at once. This guard is the one that
  also works across a network.

Exit is os._exit(EXIT_ORPHANED): no atexit handler, no buffered file flush, nothing written after the parent left.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

EXIT_ORPHANED = 1
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the Linux kernel to send `sig` to this process when its parent dies. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _orphaned() -> None:
    os._exit(EXIT_ORPHANED)


def tie_to_parent(parent_pid: int | None = None, *, watch_stdin: bool = False) -> None:
    """Arm the guards described in the module docstring; returns immediately (the watchers are daemon threads)."""
    if parent_pid is not None:
        set_parent_death_signal()
        if os.getppid() != parent_pid:
            _orphaned()

        def poll_parent() -> None:
            while os.getppid() == parent_pid:
                time.sleep(_POLL_S)
            _orphaned()

        threading.Thread(target=poll_parent, name="parent-watch", daemon=True).start()
    if watch_stdin:
        fd = sys.stdin.fileno() if sys.stdin is not None else -1

        def drain_stdin() -> None:
            # os.read on the descriptor, not sys.stdin.buffer: a daemon thread blocked inside the buffered reader
            # holds its lock, and interpreter shutdown then aborts on it (SIGABRT at exit).
            try:
                while os.read(fd, 65536):
                    pass
            except OSError:
                pass
            _orphaned()

        threading.Thread(target=drain_stdin, name="stdin-watch", daemon=True).start()
