"""Is a latency measurement trustworthy? VALID only when it ran long enough, on the backend asked for, at
steady clocks, below the thermal limit, with no throttling, and not starved of CPU by other work (contention).

Works on the stored forms (LatencyStats or its dict; run.json telemetry dicts), so a run can be re-assessed
later with other bounds. Each reason is one line naming the probe/field and the numbers.
"""

from __future__ import annotations

from typing import Any, Mapping

from harness.trackers.latency import LatencyStats

DEFAULT_MAX_FREQ_RATIO = 1.05
# Raspberry Pi 4/5 firmware starts soft throttling at 80-85 C and Jetson boards throttle higher, so a run above
# 80 C is at or near a throttle point on every target we support.
DEFAULT_MAX_TEMP_C = 80.0

# Contention (trackers/contention.py records the counters; docs/metrics.md, "Contention", says why these bounds).
# A single-stream loop on a CPU backend runs the model on its own calling thread (plus the runtime's pool), so
# uncontended it receives about one core of CPU per second of wall time or more. Below half a core the loop spent
# most of the window waiting for a core, and its timings measure the run queue.
MIN_CPU_SHARE = 0.5
# The same half core, seen from the run queue: at load L on C cores each runnable task gets at most C/L of a core,
# under half a core when L > 2C. Checked on the 1-minute load average at the end of the window.
MAX_LOAD_PER_CORE = 2.0
# A typical inference interrupted by the scheduler at least once (per runtime thread) includes another task's
# time slice; on an otherwise idle core a compute thread is preempted far less often than once per inference.
MAX_INVOLUNTARY_PER_INFERENCE = 1.0
# Time the hypervisor ran other guests on our vCPUs: above a tenth of the window, one inference in ten or more
# can include a pause the model did not cause.
MAX_STEAL_PCT = 10.0


def assess(
    stats: LatencyStats | Mapping[str, Any],
    *,
    min_duration_s: float,
    min_count: int,
    telemetry: Mapping[str, Mapping[str, Any]] | None = None,
    backend_check: Mapping[str, Any] | None = None,
    contention: Mapping[str, Any] | None = None,
    max_freq_ratio: float = DEFAULT_MAX_FREQ_RATIO,
    max_temp_c: float = DEFAULT_MAX_TEMP_C,
) -> dict[str, Any]:
    """{"status": "VALID"|"INVALID", "reasons": [...]} for one single-stream measurement.

    telemetry: {probe: {"available", "reason", "summary": {"fields": {f: {min, max, ...}}, ...}}} as written by
    TelemetryWindow.to_dict(). Checks every *_freq_mhz field for max/min > max_freq_ratio (DVFS or throttling
    changed the clock mid-run), every *_temp_c field against max_temp_c, and the probes' throttle summaries.
    An unavailable probe is not a reason by itself: telemetry is best-effort, its absence is visible in the record.
    backend_check: {"requested", "active", "ok"} from the runner's post-load provider/delegate check.
    contention: the window's record from trackers.contention.summarise (speed.contention); see contention_reasons.
    """
    s = stats.to_dict() if isinstance(stats, LatencyStats) else dict(stats)
    reasons: list[str] = []
    if s["count"] < min_count:
        reasons.append(f"count {s['count']} < min_count {min_count}")
    if s["duration_s"] < min_duration_s:
        reasons.append(f"duration {s['duration_s']:.3f} s < min_duration_s {min_duration_s:g} s")
    for probe, entry in (telemetry or {}).items():
        reasons.extend(_telemetry_reasons(probe, entry.get("summary") or {}, max_freq_ratio, max_temp_c))
    if backend_check is not None and not backend_check.get("ok", False):
        active = backend_check.get("active")
        active_s = ", ".join(active) if isinstance(active, (list, tuple)) else str(active)
        reasons.append(f"requested backend '{backend_check.get('requested')}' not active; active: {active_s or '(none)'}")
    if contention:
        reasons.extend(contention_reasons(contention))
    return {"status": "INVALID" if reasons else "VALID", "reasons": reasons}


def _telemetry_reasons(probe: str, summary: Mapping[str, Any], max_ratio: float, max_temp_c: float) -> list[str]:
    reasons: list[str] = []
    for name, f in (summary.get("fields") or {}).items():
        lo, hi = f.get("min"), f.get("max")
        if lo is None or hi is None:
            continue
        if name.endswith("_freq_mhz") and lo > 0 and hi / lo > max_ratio:
            reasons.append(f"{probe}: {name} varied {lo:g}-{hi:g} MHz (ratio {hi / lo:.3f} > {max_ratio:g})")
        if name.endswith("_temp_c") and hi > max_temp_c:
            reasons.append(f"{probe}: {name} reached {hi:g} C > limit {max_temp_c:g} C")
    reasons.extend(str(r) for r in summary.get("invalid_reasons") or ())  # a probe's own verdict (cpufreq governor)
    if summary.get("throttled_now_during_window"):
        flags = summary.get("throttled_flags") or summary.get("throttle_flags") or []
        reasons.append(f"{probe}: throttling active during the window ({', '.join(flags)})")
    if new := summary.get("throttled_new_during_window"):
        reasons.append(f"{probe}: throttle flags set during the window ({', '.join(new)})")
    return reasons


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def contention_reasons(c: Mapping[str, Any]) -> list[str]:
    """One line per sign that the timed process was starved of CPU (bounds above); counters recorded as
    "unavailable" are not judged. The CPU-share and context-switch rules apply only where the model runs on the
    CPU (`cpu_executed`): a GPU/NPU backend's host thread legitimately waits on the device. Only numbers from the
    record are printed (it comes from the board)."""

    def n(key: str, spec: str = "g") -> str:
        v = c.get(key)
        return format(v, spec) if _num(v) else "?"

    reasons: list[str] = []
    cpu_executed = c.get("cpu_executed") is True
    share = c.get("cpu_share")
    if cpu_executed and _num(share) and share < MIN_CPU_SHARE:
        reasons.append(f"contention: the process got {share:.2f} of a core ({n('cpu_s', '.2f')} s CPU over "
                       f"{n('wall_s', '.2f')} s wall) < {MIN_CPU_SHARE:g}: starved by other work")
    inv = c.get("involuntary_per_inference_thread")
    if cpu_executed and _num(inv) and inv >= MAX_INVOLUNTARY_PER_INFERENCE:
        reasons.append(f"contention: {inv:.2f} involuntary context switches per inference per thread "
                       f"({n('involuntary_ctx_switches')} in {n('count')} inferences x {n('threads')} threads) "
                       f">= {MAX_INVOLUNTARY_PER_INFERENCE:g}")
    steal = c.get("steal_pct")
    if _num(steal) and steal > MAX_STEAL_PCT:
        reasons.append(f"contention: steal time {steal:.1f}% of CPU time > {MAX_STEAL_PCT:g}% (the hypervisor ran "
                       f"other guests on this machine's CPUs)")
    load, cores = c.get("loadavg_1m"), c.get("cores")
    end = load.get("end") if isinstance(load, Mapping) else None
    if _num(end) and _num(cores) and cores > 0 and end > MAX_LOAD_PER_CORE * cores:
        reasons.append(f"contention: load average {end:.2f} on {cores:g} cores > {MAX_LOAD_PER_CORE:g} per core "
                       f"(each runnable task gets under half a core)")
    return reasons
