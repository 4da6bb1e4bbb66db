"""Process memory (current and peak RSS, load delta) and CPU utilisation over a window.

Units: MB here means MiB (2**20 bytes), matching what `top`/`free -m` show on the devices.
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import psutil

T = TypeVar("T")
_MIB = float(1 << 20)


def current_rss_mb() -> float:
    """Resident set size of this process now."""
    return psutil.Process().memory_info().rss / _MIB


STATUS_FILE = Path("/proc/self/status")
_SAMPLE_INTERVAL_S = 0.01
_window_peak_mb = 0.0  # highest RSS any CpuWindow sampled in this process (used only where /proc is absent)


def _status_hwm_mb(status: Path) -> float | None:
    """VmHWM (the peak RSS of this process's own address space) from /proc/<pid>/status, or None without it."""
    try:
        text = status.read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) * 1024 / _MIB if m else None


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own memory: the kernel's high-water mark, VmHWM.

    Not getrusage's ru_maxrss: Linux keeps the largest of it across fork and exec (exec_mmap folds the old address
    space's high-water mark into signal->maxrss), so a spawned worker reports its parent's peak when the parent was
    bigger; that made 12 of 18 entries of one run read the same 387.25 MB. VmHWM belongs to the address space the
    child got at exec, so it is the worker's own (proc(5), "VmHWM: Peak resident set size").
    Where there is no /proc (macOS, Windows), the fallback is the highest RSS sampled by a CpuWindow, which samples
    RSS over the timed window when it finds no /proc, or the current RSS when no window has run.
    """
    hwm = _status_hwm_mb(STATUS_FILE)
    if hwm is not None:
        return hwm
    return max(_window_peak_mb, current_rss_mb())


def load_delta_mb(fn: Callable[[], T]) -> tuple[T, float]:
    """Call `fn` (e.g. a model load) and return (its result, RSS after - RSS before in MB).

    A garbage collection first so garbage from earlier entries is not credited to this load. The delta can be
    negative if the allocator returns memory meanwhile; it is reported as is, not clamped.
    """
    gc.collect()
    before = current_rss_mb()
    result = fn()
    return result, current_rss_mb() - before


@dataclass
class CpuWindow:
    """CPU time used by this process over a wall-clock window, as a share of the cores it may run on.

    100% means every allowed core was busy for the whole window. Use as a context manager; the fields are set
    on exit. Where the kernel keeps no per-process high-water mark (no /proc/self/status VmHWM), the window also
    samples this process's RSS every 10 ms, so peak_rss_mb() reports the peak of the timed window rather than
    an inherited figure; `rss_peak_mb` is that sampled peak (0.0 where VmHWM exists and no sampling is needed).
    """

    cores: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_util_pct: float = 0.0
    rss_peak_mb: float = 0.0

    def __enter__(self) -> "CpuWindow":
        self._proc = psutil.Process()
        self.cores = _allowed_cores(self._proc)
        self._stop = threading.Event()
        self._sampler = None
        if _status_hwm_mb(STATUS_FILE) is None:
            self.rss_peak_mb = current_rss_mb()
            self._sampler = threading.Thread(target=self._sample_rss, name="rss-sampler", daemon=True)
            self._sampler.start()
        self._t0 = time.perf_counter()
        self._c0 = _cpu_seconds(self._proc)
        return self

    def _sample_rss(self) -> None:
        while not self._stop.wait(_SAMPLE_INTERVAL_S):
            self.rss_peak_mb = max(self.rss_peak_mb, current_rss_mb())

    def __exit__(self, *exc: object) -> None:
        global _window_peak_mb
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.rss_peak_mb = max(self.rss_peak_mb, current_rss_mb())
            _window_peak_mb = max(_window_peak_mb, self.rss_peak_mb)
        self.cpu_s = _cpu_seconds(self._proc) - self._c0
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_util_pct = 100.0 * self.cpu_s / (self.wall_s * self.cores) if self.wall_s > 0 else 0.0


def _cpu_seconds(proc: psutil.Process) -> float:
    # user + system of all threads of this process (runtime thread pools included); children are separate
    # processes and are not counted.
    t = proc.cpu_times()
    return t.user + t.system


def _allowed_cores(proc: psutil.Process) -> int:
    # Honour taskset/cgroup pinning where the platform exposes it (Linux); otherwise all logical cores.
    try:
        return max(1, len(proc.cpu_affinity()))
    except (AttributeError, psutil.Error, OSError):
        return max(1, psutil.cpu_count() or os.cpu_count() or 1)
