"""Validity verdicts: each rule trips on its own, bounds are parameters, stored dict forms are accepted."""

from __future__ import annotations

import numpy as np
import pytest

from harness.trackers.latency import LatencyStats
from harness.trackers.validity import assess

OK_STATS = {"count": 200, "duration_s": 2.5}


def telemetry(fields: dict, **extra) -> dict:
    return {"probe": {"available": True, "reason": None, "summary": {"samples": 5, "fields": fields, **extra}}}


def run(stats=OK_STATS, **kw):
    return assess(stats, min_duration_s=1.0, min_count=100, **kw)


def test_clean_measurement_is_valid():
    t = telemetry({"cpu_freq_mhz": {"min": 1500, "max": 1500}, "soc_temp_c": {"min": 50, "max": 60}})
    assert run(telemetry=t, backend_check={"requested": "cpu", "active": ["CPUExecutionProvider"], "ok": True}) == {
        "status": "VALID", "reasons": []}


def test_latency_stats_object_is_accepted():
    stats = LatencyStats.from_ms(np.full(50, 10.0))  # 50 calls, 0.5 s
    verdict = assess(stats, min_duration_s=1.0, min_count=100)
    assert verdict["status"] == "INVALID"
    assert verdict["reasons"] == ["count 50 < min_count 100", "duration 0.500 s < min_duration_s 1 s"]


def test_clock_drift_bound_is_a_parameter():
    t = telemetry({"arm_freq_mhz": {"min": 1000.0, "max": 1040.0}})  # ratio 1.04
    assert run(telemetry=t)["status"] == "VALID"
    tight = run(telemetry=t, max_freq_ratio=1.03)
    assert tight["reasons"] == ["probe: arm_freq_mhz varied 1000-1040 MHz (ratio 1.040 > 1.03)"]


def test_zero_frequency_is_not_drift():
    # a power-gated GPU reports 0 MHz; max/min is undefined, not infinite drift
    assert run(telemetry=telemetry({"gpu_freq_mhz": {"min": 0.0, "max": 1300.0}}))["status"] == "VALID"


def test_temperature_limit():
    t = telemetry({"tj_temp_c": {"min": 70.0, "max": 83.5}})
    assert run(telemetry=t)["reasons"] == ["probe: tj_temp_c reached 83.5 C > limit 80 C"]
    assert run(telemetry=t, max_temp_c=90.0)["status"] == "VALID"


def test_throttling_now_and_new_flags():
    t = telemetry({}, throttled_now_during_window=True, throttled_flags=["throttled_now", "throttled_occurred"],
                  throttled_new_during_window=["throttled_occurred"])
    assert run(telemetry=t)["reasons"] == [
        "probe: throttling active during the window (throttled_now, throttled_occurred)",
        "probe: throttle flags set during the window (throttled_occurred)",
    ]


def test_throttle_history_from_before_the_window_is_valid():
    # under-voltage at boot (0x50000) that neither recurs nor is new during the window does not slow this run
    t = telemetry({"throttled": {"min": 0x50000, "max": 0x50000}}, throttled_now_during_window=False,
                  throttled_new_during_window=[])
    assert run(telemetry=t)["status"] == "VALID"


def test_backend_not_active():
    verdict = run(backend_check={"requested": "CUDAExecutionProvider", "active": ["CPUExecutionProvider"], "ok": False})
    assert verdict["reasons"] == ["requested backend 'CUDAExecutionProvider' not active; active: CPUExecutionProvider"]


def test_unavailable_probe_alone_does_not_invalidate():
    t = {"tegrastats": {"available": False, "reason": "tegrastats not found on PATH",
                        "summary": {"samples": 0, "fields": {}}}}
    assert run(telemetry=t)["status"] == "VALID"


@pytest.mark.parametrize("count,duration,n_reasons", [(99, 2.0, 1), (100, 0.99, 1), (10, 0.1, 2), (100, 1.0, 0)])
def test_min_count_and_duration_edges(count, duration, n_reasons):
    assert len(run({"count": count, "duration_s": duration})["reasons"]) == n_reasons
