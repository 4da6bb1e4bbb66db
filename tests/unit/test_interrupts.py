"""harness/interrupts.py: an interrupt that lands inside a native module's init is raised after the import, never
read as "not installed". The module below stands for a pybind11 extension: its init turns whatever Python error
arrives into ImportError("initialization failed") raised from it, as PYBIND11_CATCH_INIT_EXCEPTIONS does."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from harness.interrupts import held

PYBIND11_LIKE_INIT = """
import os, signal, time
try:
    os.kill(os.getpid(), signal.SIGTERM)  # delivered to this thread: its handler runs at the next bytecode
    time.sleep(0.05)
except BaseException as exc:
    raise ImportError("initialization failed") from exc
"""


@pytest.fixture
def sigterm_raises():
    """bench's SIGTERM handler (harness/cli.py): the signal becomes KeyboardInterrupt."""
    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    yield terminate
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def native_module(tmp_path, monkeypatch):
    """Writes a module NAME whose init sends this process SIGTERM."""
    def make(name: str) -> str:
        (tmp_path / f"{name}.py").write_text(PYBIND11_LIKE_INIT)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name
    return make


def test_without_held_the_interrupt_reads_as_not_installed(sigterm_raises, native_module):
    # the hazard itself: what `try: import dlib / except ImportError` made of a SIGTERM before held()
    name = native_module("ext_without_held")
    with pytest.raises(ImportError, match="initialization failed") as caught:
        __import__(name)
    assert isinstance(caught.value.__cause__, KeyboardInterrupt)


def test_a_signal_inside_the_block_is_handled_after_it(sigterm_raises, native_module):
    name = native_module("ext_with_held")
    imported = []
    with pytest.raises(KeyboardInterrupt):
        with held():
            imported.append(__import__(name))  # the signal was only noted: the init finished
    assert imported and imported[0].__name__ == name
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises


def test_upstream_availability_passes_the_interrupt_on(sigterm_raises, native_module):
    from harness.upstream import availability

    native_module("dlib")
    with pytest.raises(KeyboardInterrupt):
        availability()


def test_the_interrupt_wins_over_the_blocks_own_error(sigterm_raises):
    with pytest.raises(KeyboardInterrupt) as caught:
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            raise ImportError("no module named x")
    assert isinstance(caught.value.__context__, ImportError)
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises


def test_no_signal_changes_nothing(sigterm_raises):
    before = signal.getsignal(signal.SIGINT)
    with held():
        assert signal.getsignal(signal.SIGTERM) is not sigterm_raises
        value = 42
    assert value == 42
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises and signal.getsignal(signal.SIGINT) is before


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with held():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_it_changes_nothing(sigterm_raises):
    seen = []

    def work():
        with held():  # signal.signal would raise ValueError here
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [sigterm_raises]
