"""Advisory locks that let several bench processes share one model cache.

Two kinds, both in <cache>/locks/ (a folder nothing else writes or deletes, so a lock file is never removed
under its holder):

- ``pack-<model>.lock``: held for the whole build of that model's pack, pack.json updates included, by
  `bench models build` and by `bench run`'s lazy build alike (both go through harness.models.build.build_model);
- ``sources-<model>.lock``: held while that model's source files are checked and fetched.

They are fcntl.flock locks, as the run-directory lock in harness.scenarios.orchestrate: the kernel drops one
when its holder exits or dies, so a killed builder never leaves a stale lock behind. The file is opened without
truncating it, and the holder writes who it is (pid, host, command, since when) into it, so that a process that
has to wait can say whom it is waiting for. (The `filelock` library opens its lock file with O_TRUNC, which would
erase the holder's record each time another process tried the lock; hence the few lines of stdlib here.)
A waiting process polls until `timeout_s`, then gives up with one line naming the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from harness.errors import UsageError

DEFAULT_TIMEOUT_S = 1800.0  # a cold build of every model on a small board takes minutes, not hours
POLL_S = 0.2
# A holder writes its record just after it takes the lock; a waiter that arrives in between reads an empty file.
# It gives the holder this long to write before it settles for "another process" (seen under load: two builders
# started together, the second read the first's record before the first had written it).
RECORD_GRACE_S = 2.0


class LockTimeout(UsageError):
    """Another bench process held a cache lock for longer than this one was willing to wait."""


def locks_dir(cache: Path) -> Path:
    return cache / "locks"


def pack_lock_path(cache: Path, model_id: str) -> Path:
    return locks_dir(cache) / f"pack-{model_id}.lock"


def sources_lock_path(cache: Path, model_id: str) -> Path:
    return locks_dir(cache) / f"sources-{model_id}.lock"


def _command() -> str:
    argv = list(sys.argv)
    if argv and (Path(argv[0]).name in ("bench", "__main__.py")):
        argv[0] = "bench"
    return shlex.join(argv)


def _try_lock(fh) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_record(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):  # absent, or read in the middle of the holder's write
        return {}
    return rec if isinstance(rec, dict) else {}


def describe_holder(path: Path, *, grace_s: float = 0.0) -> str:
    """Who holds the lock at `path`, from the record its holder wrote (or a plain 'another process').
    With `grace_s`, an empty record is read again until the holder has written it or `grace_s` has passed."""
    deadline = time.monotonic() + grace_s
    rec = _read_record(path)
    while not rec.get("pid") and time.monotonic() < deadline:
        time.sleep(0.05)
        rec = _read_record(path)
    if not rec.get("pid"):
        return "another process"
    return f"pid {rec['pid']} on {rec.get('host', '?')} since {rec.get('since', '?')} ({rec.get('command', '?')})"


@contextmanager
def cache_lock(path: Path, what: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the exclusive lock at `path` for the body; `what` names the locked thing in messages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # no truncation: the current holder's record stays readable
    held = False
    try:
        if not _try_lock(fh):
            log(f"waiting for {what}: locked by {describe_holder(path, grace_s=min(RECORD_GRACE_S, timeout_s))} "
                f"(up to {timeout_s:g} s)")
            deadline = time.monotonic() + timeout_s
            while not _try_lock(fh):
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{path}: {what} is still locked by {describe_holder(path)} after waiting "
                                      f"{timeout_s:g} s; let it finish or stop it (the lock ends with its process)")
                time.sleep(POLL_S)
        held = True
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                             "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}))
        fh.flush()
        yield
    finally:
        if held:  # still held here: clear the record so that nobody reads about a holder that has gone
            fh.seek(0)
            fh.truncate()
        fh.close()  # closing the descriptor releases the flock
