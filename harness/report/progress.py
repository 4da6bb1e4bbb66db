"""Progress as plain lines, for `bench run` when its output is not a terminal (a file, a pipe, CI).

rich draws live bars only on a terminal; redirected, they print nothing, and a run that spent 15 minutes decoding
and running entries said nothing until the end (issue 16). Here every task (a stage such as "decode, detect,
align", "model variants", or one entry's samples) prints a start line, then at most one line per `interval_s` of
its own while it advances (done/total, percentage, elapsed), then an end line when it completes. The rate bound is
per task, so a long entry reports every `interval_s` and a fast one prints only its start and end.

The interface is the one orchestrate.run_benchmark takes: `progress(description, total)` returns `advance(n=1)`.
Thread-safe: an entry's samples are advanced from a watcher thread while the main thread waits on the job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 15.0


class LineProgress:
    """`progress(description, total) -> advance(n=1)`, writing one plain line at a time through `write`.

    clock: seconds, monotonic (time.monotonic; tests pass a fake one). interval_s: the least time between two
    intermediate lines of one task; start and end lines are always written.
    """

    def __init__(self, write: Callable[[str], None], *, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.write = write
        self.interval_s = float(interval_s)
        self.clock = clock
        self._lock = threading.Lock()

    def __call__(self, description: str, total: int) -> Callable[..., None]:
        start = self.clock()
        state = {"done": 0, "last": start, "ended": False}
        total = max(int(total), 0)
        self.write(f"progress: {description}: started, {total} to do")
        if total == 0:
            state["ended"] = True
            self.write(f"progress: {description}: 0/0 done, elapsed {0.0:.0f} s")

        def advance(n: int = 1) -> None:
            with self._lock:
                if state["ended"]:
                    return
                state["done"] = min(total, state["done"] + int(n))
                now = self.clock()
                elapsed = now - start
                if state["done"] >= total:
                    state["ended"] = True
                    self.write(f"progress: {description}: {total}/{total} done, elapsed {elapsed:.0f} s")
                elif now - state["last"] >= self.interval_s:
                    state["last"] = now
                    pct = 100.0 * state["done"] / total
                    self.write(f"progress: {description}: {state['done']}/{total} ({pct:.0f}%), "
                               f"elapsed {elapsed:.0f} s")

        return advance
