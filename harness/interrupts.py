"""Ctrl-C and SIGTERM held while a native extension module initialises: `with held(): import dlib`.

Python runs a signal's handler in the main thread at the next bytecode it executes, wherever that is. During the
import of a pybind11 extension (dlib, onnxruntime, ai_edge_litert, tflite_runtime) that can be inside the module's
init function, and pybind11 turns every Python error raised there into ImportError("initialization failed") raised
from it (PYBIND11_MODULE's PYBIND11_CATCH_INIT_EXCEPTIONS, pybind11/detail/common.h). An optional import that
catches ImportError then reads an interrupt as "dlib is not installed", and the run goes on to its end. Measured
here before held(): `bench run --model gender-dlib` (the command of tests/hostile/test_concurrency.py) sent SIGTERM
0.01-0.02 s after it logged "run ID -> DIR" exited 0 with every entry run, the interrupt lost, in 10 of 15 tries.

held() swaps the handlers of SIGINT and SIGTERM, for the length of the block, for one that only notes the signal;
on leaving the block it puts the handlers back and, if a signal came, calls the handler that was there, past the
import, in plain Python code: bench's turns it into KeyboardInterrupt as at any other point. A handler that is not a
Python callable (SIG_IGN, SIG_DFL, one set outside Python) is left in place. Only the main thread sets handlers
(and only it runs them): elsewhere held() changes nothing.

Runs on the device side too (the runners import onnxruntime and LiteRT through it): standard library only, 3.8+.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block (see the module's doc); a signal that came is handled as it leaves."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum, frame):
        noted.append(signum)

    previous = {}
    for signum in SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = signal.signal(signum, note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if noted:  # raises (KeyboardInterrupt) over whatever the block raised: the interrupt is what happened
            previous[noted[0]](noted[0], None)
