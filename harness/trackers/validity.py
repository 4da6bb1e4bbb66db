"""Is a latency measurement trustworthy? VALID only when it ran long enough, on the backend asked for, at
steady clocks, below the thermal limit and with no throttling.

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


def assess(
    stats: LatencyStats | Mapping[str, Any],
    *,
    min_duration_s: float,
    min_count: int,
    telemetry: Mapping[str, Mapping[str, Any]] | None = None,
    backend_check: Mapping[str, Any] | None = None,
    max_freq_ratio: float = DEFAULT_MAX_FREQ_RATIO,
    max_temp_c: float = DEFAULT_MAX_TEMP_C,
) -> dict[str, Any]:
    """{"status": "VALID"|"INVALID", "reasons": [...]} for one single-stream measurement.

    telemetry: {probe: {"available", "reason", "summary": {"fields": {f: {min, max, ...}}, ...}}} as written by
    TelemetryWindow.to_dict(). Checks every *_freq_mhz field for max/min > max_freq_ratio (DVFS or throttling
    changed the clock mid-run), every *_temp_c field against max_temp_c, and the probes' throttle summaries.
    An unavailable probe is not a reason by itself: telemetry is best-effort, its absence is visible in the record.
    backend_check: {"requested", "active", "ok"} from the runner's post-load provider/delegate check.
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
