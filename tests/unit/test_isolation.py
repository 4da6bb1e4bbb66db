"""run_isolated: success, exception, segfault, hang and exit-without-result, each in a real spawned child."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from harness.isolation import run_isolated


# Targets must be module-level: the spawned child imports this module and looks them up by name.
def _add(a: int, b: int) -> dict:
    return {"sum": a + b, "pid": os.getpid()}


def _raise(message: str) -> None:
    raise ValueError(message)


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang() -> None:
    time.sleep(60)


def _exit(code: int) -> None:
    os._exit(code)


def _unpicklable_value():
    return lambda: None


def test_success_returns_value_from_another_process():
    res = run_isolated(_add, (2, 3), timeout_s=60)
    assert res.ok and res.error is None and not res.timed_out
    assert res.value["sum"] == 5 and res.value["pid"] != os.getpid()
    assert res.exit_code == 0 and res.duration_s > 0


def test_exception_in_child():
    res = run_isolated(_raise, ("bad model file",), timeout_s=60)
    assert not res.ok and res.value is None
    assert res.error == "ValueError: bad model file" and res.error_type == "ValueError"
    assert "in _raise" in res.traceback
    assert res.exit_code == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_segfault_is_a_failed_result_not_a_dead_harness():
    res = run_isolated(_segfault, (), timeout_s=60)
    assert not res.ok and not res.timed_out
    assert res.exit_code == -signal.SIGSEGV
    assert res.error == "worker crashed with signal SIGSEGV" and res.error_type == "crash"


def test_hang_is_killed_at_timeout():
    start = time.perf_counter()
    res = run_isolated(_hang, (), timeout_s=1.5)
    assert time.perf_counter() - start < 15
    assert not res.ok and res.timed_out
    assert res.error == "timed out after 1.5 s" and res.error_type == "timeout"
    assert res.exit_code == -signal.SIGKILL


def test_exit_without_result():
    res = run_isolated(_exit, (3,), timeout_s=60)
    assert not res.ok and res.exit_code == 3
    assert res.error == "worker exited with code 3 without a result"


def test_unpicklable_return_value_is_reported():
    res = run_isolated(_unpicklable_value, (), timeout_s=60)
    assert not res.ok and "pickle" in res.error.lower()


def test_unpicklable_target_is_a_caller_bug():
    with pytest.raises(TypeError, match="cannot be pickled"):
        run_isolated(lambda: 1, (), timeout_s=5)
