"""Did the timed process get the CPU it asked for? Counters read at the start and end of a timed window.

A single-stream latency measured while other work holds the cores is a measurement of the queue, not of the model:
on a 2-core host at load 6-14 a run got 9-18% of a core and its median latency doubled within five minutes, and
was stamped VALID (issue 16). This module records, for the window only:

- the CPU time this process received against the wall time (`cpu_share`: cores' worth of CPU; and per thread
  used, `cpu_share_per_thread`), from psutil.Process().cpu_times() (user + system, every thread of the process);
- involuntary context switches of the process (psutil.Process().num_ctx_switches().involuntary): times the
  scheduler took a core away from one of its threads because something else was runnable;
- steal time (psutil.cpu_times().steal, Linux guests): time the hypervisor ran something else on our vCPUs, as a
  share of all CPU time of the window;
- the run queue: os.getloadavg() (1-minute load average) and the runnable count of /proc/loadavg (4th field,
  "running/total"; it counts the reader itself), at the start and the end.

Device side: imports psutil and the standard library only. A counter the platform does not have is recorded as
the string "unavailable" (never a made-up 0). The thresholds that turn these figures into an INVALID stamp live in
trackers/validity.py (docs/metrics.md, "Contention").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

UNAVAILABLE = "unavailable"
LOADAVG_FILE = Path("/proc/loadavg")


def _runnable(path: Path = LOADAVG_FILE) -> int | str:
    """The runnable-task count of /proc/loadavg ("0.52 0.58 0.59 3/812 4242" -> 3), or "unavailable"."""
    try:
        return int(path.read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return UNAVAILABLE


def _loadavg_1m() -> float | str:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # no getloadavg (Windows), or the kernel would not say
        return UNAVAILABLE


def _steal_and_total() -> tuple[float, float] | str:
    """(steal seconds, all CPU seconds) summed over CPUs, or "unavailable" where the platform has no steal field.
    guest/guest_nice are left out of the total: Linux already counts them in user/nice."""
    try:
        t = psutil.cpu_times()
    except (psutil.Error, OSError):
        return UNAVAILABLE
    if not hasattr(t, "steal"):
        return UNAVAILABLE
    total = sum(v for k, v in t._asdict().items() if k not in ("guest", "guest_nice"))
    return float(t.steal), float(total)


def snapshot(proc: psutil.Process | None = None) -> dict[str, Any]:
    """Every counter now; each one that cannot be read is "unavailable"."""
    proc = proc or psutil.Process()
    snap: dict[str, Any] = {"wall_s": time.perf_counter()}
    try:
        t = proc.cpu_times()
        snap["cpu_s"] = float(t.user + t.system)
    except (psutil.Error, OSError):
        snap["cpu_s"] = UNAVAILABLE
    try:
        snap["involuntary"] = int(proc.num_ctx_switches().involuntary)
    except (psutil.Error, OSError, AttributeError):
        snap["involuntary"] = UNAVAILABLE
    steal = _steal_and_total()
    snap["steal_s"], snap["cpu_total_s"] = steal if isinstance(steal, tuple) else (UNAVAILABLE, UNAVAILABLE)
    snap["loadavg_1m"] = _loadavg_1m()
    snap["runnable"] = _runnable()
    return snap


def _num(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def summarise(start: dict[str, Any], end: dict[str, Any], *, cores: int, threads: int, count: int | None,
              cpu_executed: bool) -> dict[str, Any]:
    """The window's contention record (run.json speed.contention) from two snapshots.

    cores: the cores this process may run on (affinity); threads: the runtime threads asked for (0 = the
    runtime's default, taken as `cores`); count: timed inferences in the window (for switches per inference);
    cpu_executed: whether the model runs on the CPU (a GPU/NPU backend's host thread waits on the device, so its
    CPU share says nothing about starvation).
    """
    wall = end["wall_s"] - start["wall_s"]
    threads_used = threads if threads > 0 else cores
    out: dict[str, Any] = {"wall_s": round(wall, 6), "cores": int(cores), "threads": int(threads_used),
                           "threads_requested": int(threads) if threads > 0 else "runtime default",
                           "cpu_executed": bool(cpu_executed), "count": count}
    if _num(start["cpu_s"], end["cpu_s"]) and wall > 0:
        cpu = end["cpu_s"] - start["cpu_s"]
        out.update(cpu_s=round(cpu, 6), cpu_share=round(cpu / wall, 4),
                   cpu_share_per_thread=round(cpu / wall / threads_used, 4))
    else:
        out.update(cpu_s=UNAVAILABLE, cpu_share=UNAVAILABLE, cpu_share_per_thread=UNAVAILABLE)
    if _num(start["involuntary"], end["involuntary"]) and wall > 0:
        inv = end["involuntary"] - start["involuntary"]
        out.update(involuntary_ctx_switches=int(inv), involuntary_per_s=round(inv / wall, 3),
                   involuntary_per_inference_thread=(round(inv / (count * threads_used), 4) if count else None))
    else:
        out.update(involuntary_ctx_switches=UNAVAILABLE, involuntary_per_s=UNAVAILABLE,
                   involuntary_per_inference_thread=UNAVAILABLE)
    if _num(start["steal_s"], end["steal_s"], start["cpu_total_s"], end["cpu_total_s"]):
        total = end["cpu_total_s"] - start["cpu_total_s"]
        out["steal_pct"] = round(100.0 * (end["steal_s"] - start["steal_s"]) / total, 3) if total > 0 else 0.0
    else:
        out["steal_pct"] = UNAVAILABLE
    for key in ("loadavg_1m", "runnable"):
        a, b = start[key], end[key]
        out[key] = {"start": a, "end": b} if _num(a, b) else UNAVAILABLE
    return out


class ContentionWindow:
    """Context manager around a timed loop: `.record` (summarise's dict) is set on exit; set `.count` (the
    loop's inferences) inside the block, once the loop has run."""

    def __init__(self, *, threads: int, cpu_executed: bool):
        self.threads = int(threads)
        self.cpu_executed = bool(cpu_executed)
        self.count: int | None = None
        self.record: dict[str, Any] | None = None

    def __enter__(self) -> "ContentionWindow":
        self._proc = psutil.Process()
        try:
            self.cores = max(1, len(self._proc.cpu_affinity()))
        except (AttributeError, psutil.Error, OSError):
            self.cores = max(1, psutil.cpu_count() or os.cpu_count() or 1)
        self._start = snapshot(self._proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.record = summarise(self._start, snapshot(self._proc), cores=self.cores, threads=self.threads,
                                count=self.count, cpu_executed=self.cpu_executed)


_NUMBER_FIELDS = ("wall_s", "cores", "threads", "count", "cpu_s", "cpu_share", "cpu_share_per_thread",
                  "involuntary_ctx_switches", "involuntary_per_s", "involuntary_per_inference_thread", "steal_pct")
_WINDOW_FIELDS = ("loadavg_1m", "runnable")


def clean_record(value: Any) -> dict[str, Any] | str:
    """A contention record as a board sent it, kept only where it has the shape summarise() gives: known fields,
    finite non-negative numbers (or "unavailable"), start/end pairs of numbers. Anything else is "unavailable"
    field by field, and a value that is not a record at all is "unavailable" as a whole; so nothing a board sends
    becomes a path, markup or a crash on the host."""
    import math

    if not isinstance(value, dict):
        return UNAVAILABLE

    def number(v: Any) -> Any:
        ok = _num(v) and math.isfinite(v) and v >= 0
        return v if ok else UNAVAILABLE

    out: dict[str, Any] = {k: number(value.get(k)) for k in _NUMBER_FIELDS}
    if value.get("count") is None:
        out["count"] = None
    tr = value.get("threads_requested")
    out["threads_requested"] = tr if _num(tr) or tr == "runtime default" else UNAVAILABLE
    out["cpu_executed"] = value.get("cpu_executed") is True
    for key in _WINDOW_FIELDS:
        w = value.get(key)
        pair = {e: number(w.get(e)) for e in ("start", "end")} if isinstance(w, dict) else None
        out[key] = pair if pair and all(_num(v) for v in pair.values()) else UNAVAILABLE
    return out
