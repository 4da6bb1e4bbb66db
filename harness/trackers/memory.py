"""Process memory (current and peak RSS, load delta) and CPU utilisation over a window.

Units: MB here means MiB (2**20 bytes), matching what `top`/`free -m` show on the devices.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import psutil

T = TypeVar("T")
_MIB = float(1 << 20)


def current_rss_mb() -> float:
    """Resident set size of this process now."""
    return psutil.Process().memory_info().rss / _MIB


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it started (the high-water mark, VmHWM).

    ru_maxrss is KiB on Linux but bytes on macOS; we normalise both. We also take max() with the current RSS
    because some kernels (and WSL) report ru_maxrss as 0.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = maxrss / _MIB if sys.platform == "darwin" else maxrss * 1024 / _MIB
    return max(peak, current_rss_mb())


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
    on exit.
    """

    cores: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_util_pct: float = 0.0

    def __enter__(self) -> "CpuWindow":
        self._proc = psutil.Process()
        self.cores = _allowed_cores(self._proc)
        self._t0 = time.perf_counter()
        self._c0 = _cpu_seconds(self._proc)
        return self

    def __exit__(self, *exc: object) -> None:
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
