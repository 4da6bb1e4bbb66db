"""Memory and CPU trackers against the kernel's own accounting (/proc/self/status, process_time)."""

from __future__ import annotations

import re
import resource
import time
from pathlib import Path

import numpy as np
import pytest

from harness.isolation import run_isolated
from harness.trackers import memory
from harness.trackers.memory import CpuWindow, current_rss_mb, load_delta_mb, peak_rss_mb

STATUS = Path("/proc/self/status")


def _status_mb(field: str) -> float:
    m = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.M)
    assert m, field
    return int(m.group(1)) / 1024


@pytest.mark.skipif(not STATUS.exists(), reason="needs Linux /proc")
def test_peak_rss_matches_kernel_high_water_mark():
    # ru_maxrss is KiB on Linux: a wrong unit would be off by 1024x
    assert peak_rss_mb() == pytest.approx(_status_mb("VmHWM"), abs=2.0)
    assert current_rss_mb() == pytest.approx(_status_mb("VmRSS"), abs=2.0)


def _allocate_and_measure(size_mb: int) -> tuple[int, float, float, float]:
    arr, delta = load_delta_mb(lambda: np.ones(size_mb * (1 << 20) // 8))  # np.ones touches every page
    rss_with = current_rss_mb()
    nbytes = arr.nbytes
    del arr
    return nbytes, delta, rss_with, peak_rss_mb()


def test_load_delta_sees_an_allocation_and_peak_remembers_it():
    # In a fresh (spawned) process: in this one, earlier tests leave freed pages resident in the allocator's arenas,
    # and a new array may be placed on them without the RSS moving at all.
    res = run_isolated(_allocate_and_measure, (64,), timeout_s=60)
    assert res.ok, res.error
    nbytes, delta, rss_with, peak = res.value
    assert nbytes == 64 << 20
    assert delta == pytest.approx(64, abs=8)
    assert peak >= rss_with - 1


def _child_peaks() -> tuple[float, float]:
    """(peak_rss_mb, getrusage's ru_maxrss in MiB) as a freshly spawned worker sees them."""
    return peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.skipif(not STATUS.exists(), reason="needs Linux /proc")
def test_spawned_child_reports_its_own_peak_not_the_parents():
    # The parent touches 600 MB first: Linux carries ru_maxrss across fork and exec, so a spawned worker's
    # ru_maxrss starts at the parent's peak. peak_rss_mb must be the worker's own (a bare interpreter: tens of MB).
    big = np.ones(600 * (1 << 20) // 8)
    try:
        parent_peak = peak_rss_mb()
        res = run_isolated(_child_peaks, timeout_s=60)
    finally:
        del big
    assert res.ok, res.error
    child_peak, child_maxrss = res.value
    assert parent_peak >= 600
    assert child_maxrss >= 600, "the inherited figure this guards against did not show up"
    assert child_peak < 200


def test_without_proc_the_timed_window_samples_the_peak(monkeypatch, tmp_path):
    # No /proc (macOS, Windows): CpuWindow samples RSS over its window and peak_rss_mb reports that peak.
    monkeypatch.setattr(memory, "STATUS_FILE", tmp_path / "absent")
    monkeypatch.setattr(memory, "_window_peak_mb", 0.0)
    before = current_rss_mb()
    with CpuWindow() as win:
        arr = np.ones(96 * (1 << 20) // 8)
        time.sleep(0.1)  # ten sampling intervals with the array resident
        with_arr = current_rss_mb()
        del arr
    assert win.rss_peak_mb >= with_arr - 4
    assert win.rss_peak_mb >= before + 80
    assert peak_rss_mb() == pytest.approx(max(win.rss_peak_mb, current_rss_mb()))


def test_cpu_window_agrees_with_process_time():
    c0 = time.process_time()
    with CpuWindow() as busy:
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
    c1 = time.process_time()
    assert busy.cpu_s == pytest.approx(c1 - c0, abs=0.03)
    assert busy.cores >= 1
    assert busy.cpu_util_pct == pytest.approx(100 * busy.cpu_s / (busy.wall_s * busy.cores))
    assert 0 < busy.cpu_util_pct <= 100 / busy.cores + 5  # one busy thread fills at most one core


def test_cpu_window_idle_is_near_zero():
    with CpuWindow() as idle:
        time.sleep(0.2)
    assert idle.wall_s >= 0.2
    assert idle.cpu_util_pct < 10
