"""Telemetry probe base classes and the report a probe produces for one timed window.

A probe yields readings: flat dicts of numbers whose keys carry their unit (cpu_freq_mhz, gpu_temp_c,
vdd_in_mw). trackers.validity relies on those suffixes (_freq_mhz, _temp_c), and energy on the mW power fields.

A probe that cannot run (tool missing, output not understood) raises UnavailableError with a one-line reason;
the telemetry window records it as available=False instead of failing the benchmark.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Tuple

import numpy as np

from harness.errors import UnavailableError

# typing's aliases, not dict[...]/tuple[...]: these are evaluated at import, and the device side runs on Python 3.8
Reading = Dict[str, float]
Sample = Tuple[float, Reading]  # (perf_counter seconds, reading)

_COMMAND_TIMEOUT_S = 5.0


def require_tool(tool: str) -> str:
    """Path of `tool` on PATH, or UnavailableError '<tool> not found on PATH'."""
    path = shutil.which(tool)
    if path is None:
        raise UnavailableError(f"{tool} not found on PATH")
    return path


def run_tool(argv: list[str], timeout_s: float = _COMMAND_TIMEOUT_S, shown_as: str | None = None) -> str:
    """Run a telemetry command and return its stdout; any failure becomes UnavailableError naming the command
    (as `shown_as` when given: a command whose arguments may hold secrets is named without them)."""
    require_tool(argv[0])
    cmd = shown_as or " ".join(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise UnavailableError(f"{cmd}: no answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise UnavailableError(f"{cmd}: could not run: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise UnavailableError(f"{cmd} exited with code {done.returncode}: {detail[0] if detail else '(no output)'}")
    return done.stdout


def unparseable(tool: str, line: str) -> UnavailableError:
    """The one error text for output we do not understand: the tool and the first bad line."""
    return UnavailableError(f"{tool}: unparseable output: {line.strip()!r}")


@dataclass
class ProbeReport:
    """What one probe saw during one window. `to_dict()` is the run.json speed.telemetry.<probe> entry."""

    name: str
    available: bool
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # static facts read once (device model, power mode)
    samples: list[Sample] = field(default_factory=list)  # times relative to the window start
    extra: dict[str, Any] = field(default_factory=dict)  # probe-specific summary (e.g. decoded throttle flags)
    power_fields: tuple[str, ...] = ()  # candidate total-power fields in mW, best first

    def fields(self) -> list[str]:
        return sorted({k for _, r in self.samples for k in r})

    def series(self, name: str) -> np.ndarray:
        """(n, 2) array of [t_s, value] for one field, samples lacking it dropped."""
        rows = [(t, r[name]) for t, r in self.samples if name in r and np.isfinite(r[name])]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 2)

    def power_series_mw(self) -> np.ndarray | None:
        """[t_s, mW] of the first total-power field this probe reported, or None."""
        for name in self.power_fields:
            s = self.series(name)
            if len(s):
                return s
        return None

    def summary(self) -> dict[str, Any]:
        """samples count plus min/mean/max/first/last per field (first/last show drift across the window)."""
        out: dict[str, Any] = {"samples": len(self.samples), "fields": {}}
        for name in self.fields():
            v = self.series(name)[:, 1]
            if len(v):
                out["fields"][name] = {
                    "min": float(v.min()), "mean": float(v.mean()), "max": float(v.max()),
                    "first": float(v[0]), "last": float(v[-1]),
                }
        out.update(self.extra)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason, "info": self.info, "summary": self.summary()}


class Probe(ABC):
    """One telemetry source. Lifecycle: start() before the timed work, stop() after; then report()."""

    name: ClassVar[str]
    power_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.info: dict[str, Any] = {}
        self.reason: str | None = None  # set when the probe degrades (partial data or stopped mid-window)

    @abstractmethod
    def start(self, interval_s: float) -> None:
        """Begin sampling in the background; raise UnavailableError if the source cannot be used at all."""

    @abstractmethod
    def stop(self) -> None:
        """Stop sampling and release processes/threads; never raises."""

    def extra_summary(self) -> dict[str, Any]:
        return {}

    def report(self, t0: float) -> ProbeReport:
        return ProbeReport(
            name=self.name, available=self.reason is None, reason=self.reason, info=self.info,
            samples=[(t - t0, r) for t, r in self.samples], extra=self.extra_summary(),
            power_fields=self.power_fields,
        )


class PollingProbe(Probe):
    """A probe read by calling read() every interval on a daemon thread (one reading at start and at stop too,
    so even a window shorter than the interval has a first and last value)."""

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    @abstractmethod
    def read(self) -> Reading:
        """One reading now; raise UnavailableError if the source fails or answers something unparseable."""

    def _take(self) -> bool:
        try:
            reading = self.read()
        except UnavailableError as exc:
            self.reason = self.reason or f"stopped mid-window: {exc.message}"
            self._failed = True
            return False
        self.samples.append((time.perf_counter(), reading))
        return True

    def start(self, interval_s: float) -> None:
        self.samples.append((time.perf_counter(), self.read()))  # fails loudly (-> unavailable) before the window
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), name=f"probe-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            if not self._take():
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if not self._failed:
                self._take()
