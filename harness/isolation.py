"""Run one benchmark entry in a child process so a crashing or hanging runtime fails that entry, not the run.

The child is started with multiprocessing's "spawn" context: a fresh interpreter, so no runtime state (thread
pools, CUDA contexts, half-initialised delegates) is inherited through fork. The cost is an interpreter start
plus re-importing the target's module (~0.1-0.5 s), negligible next to loading a model.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import pickle
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

_CTX = multiprocessing.get_context("spawn")
_KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class IsolatedResult:
    """Outcome of run_isolated. On failure `error` is one line; `error_type` is the exception class name,
    "crash" (died without a result) or "timeout"; `traceback` is the child's formatted traceback if it raised."""

    ok: bool
    value: Any
    error: str | None
    exit_code: int | None
    timed_out: bool
    duration_s: float
    error_type: str | None = None
    traceback: str | None = None


def _child(conn: multiprocessing.connection.Connection, target: Callable[..., Any], args: tuple) -> None:
    """Child entry: run target, send ("ok", value) or ("error", type, message, traceback). Must be top-level."""
    try:
        value = target(*args)
        payload: tuple = ("ok", value)
        pickle.dumps(payload)  # fail here, inside the child, with a clear message, not in conn.send
    except BaseException as exc:  # noqa: BLE001 - everything the target raises is reported to the parent
        payload = ("error", type(exc).__name__, str(exc) or repr(exc), traceback.format_exc())
    conn.send(payload)
    conn.close()


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_isolated(target: Callable[..., Any], args: tuple = (), *, timeout_s: float) -> IsolatedResult:
    """Run target(*args) in a spawned child and return its (picklable) value or what went wrong.

    target must be a module-level function (spawn pickles it by reference). Raises TypeError if target/args
    cannot be pickled, because that is a bug in the caller, not a failure of the entry.
    """
    try:
        pickle.dumps((target, args))
    except Exception as exc:  # noqa: BLE001 - pickling raises many types (PicklingError, AttributeError, TypeError)
        raise TypeError(f"run_isolated: {getattr(target, '__qualname__', target)!s} or its args cannot be pickled "
                        f"for a spawned child: {exc}") from None

    recv, send = _CTX.Pipe(duplex=False)
    proc = _CTX.Process(target=_child, args=(send, target, args), daemon=True)
    start = time.perf_counter()
    proc.start()
    send.close()  # the parent keeps only the read end, so EOF shows up if the child dies
    try:
        payload, timed_out = _wait(recv, proc.sentinel, timeout_s)
        duration = time.perf_counter() - start
        if timed_out:
            proc.kill()
            proc.join(_KILL_GRACE_S)
            return IsolatedResult(False, None, f"timed out after {timeout_s:g} s", proc.exitcode, True, duration,
                                  error_type="timeout")
        proc.join(_KILL_GRACE_S)
        if proc.is_alive():  # sent a result but hangs on exit (runtime teardown): the result stands
            proc.kill()
            proc.join(_KILL_GRACE_S)
        code = proc.exitcode
        if payload is None:
            message = (f"worker crashed with signal {_signal_name(code)}" if code is not None and code < 0
                       else f"worker exited with code {code} without a result")
            return IsolatedResult(False, None, message, code, False, duration, error_type="crash")
        if payload[0] == "ok":
            return IsolatedResult(True, payload[1], None, code, False, duration)
        _, exc_type, message, tb = payload
        return IsolatedResult(False, None, f"{exc_type}: {message}", code, False, duration,
                              error_type=exc_type, traceback=tb)
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
            proc.join(_KILL_GRACE_S)


def _wait(recv: multiprocessing.connection.Connection, sentinel: int, timeout_s: float) -> tuple[tuple | None, bool]:
    """(payload, timed_out): payload is None if the child died without sending.

    Waits on the pipe and on the process sentinel together: a child sending a large value blocks until the parent
    reads it (so the pipe is read first when both are ready), and a child that dies while some other process still
    holds a copy of the pipe's write end (no EOF ever comes) is noticed through its sentinel.
    """
    ready = multiprocessing.connection.wait([recv, sentinel], timeout=timeout_s)
    if not ready:
        return None, True
    if recv not in ready and not recv.poll(0):
        return None, False
    try:
        return recv.recv(), False
    except (EOFError, OSError):
        return None, False
