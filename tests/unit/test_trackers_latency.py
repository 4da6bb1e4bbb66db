"""LatencyStats and measure_loop: statistics against hand-computed values, CI coverage, loop stop rules."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from harness.trackers.latency import LatencyStats, measure_loop, median_ci

RUN_JSON_KEYS = {"count", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
                 "p50_ci_ms", "duration_s"}


def test_from_ms_on_1_to_100_matches_hand_values():
    s = LatencyStats.from_ms(np.arange(100, 0, -1, dtype=float))  # unsorted on purpose
    assert s.count == 100
    assert s.min_ms == 1.0 and s.max_ms == 100.0
    assert s.mean_ms == pytest.approx(50.5)
    assert s.std_ms == pytest.approx(29.011491975882016)  # sample std (ddof=1) of 1..100
    # linear interpolation: position (n-1)*q from 0
    assert (s.p50_ms, s.p90_ms, s.p95_ms) == pytest.approx((50.5, 90.1, 95.05))
    assert (s.p99_ms, s.p999_ms) == pytest.approx((99.01, 99.901))
    assert s.duration_s == pytest.approx(5.05)
    assert s.p50_ci_ms == (40.0, 61.0)  # order statistics 40 and 61 of 100 at 95%


def test_to_dict_is_the_run_json_single_stream_block():
    d = LatencyStats.from_ms(np.linspace(1.0, 2.0, 50)).to_dict()
    assert set(d) == RUN_JSON_KEYS
    assert isinstance(d["p50_ci_ms"], list) and len(d["p50_ci_ms"]) == 2
    json.dumps(d)


def test_median_ci_small_samples():
    assert median_ci(np.arange(1.0, 6.0)) is None  # n=5: even [min, max] covers only 93.75%
    assert median_ci(np.arange(1.0, 7.0)) == (1.0, 6.0)  # n=6: [min, max] covers 96.9%
    assert LatencyStats.from_ms(np.array([3.0])).p50_ci_ms is None
    assert LatencyStats.from_ms(np.array([3.0])).std_ms == 0.0


def test_median_ci_covers_the_true_median_of_a_skewed_distribution():
    rng = np.random.default_rng(0)
    draws = np.sort(rng.lognormal(mean=0.0, sigma=1.0, size=(2000, 40)), axis=1)  # true median exp(0) = 1
    hits = 0
    for row in draws:
        lo, hi = median_ci(row)
        hits += lo <= 1.0 <= hi
    coverage = hits / len(draws)
    assert 0.94 <= coverage <= 0.99  # nominal 95%; exact binomial coverage for n=40 is 96.2%


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan])])
def test_from_ms_rejects_empty_and_nan(bad):
    with pytest.raises(ValueError, match="from_ms"):
        LatencyStats.from_ms(bad)


def test_measure_loop_stops_at_min_count_when_duration_is_met():
    calls = []
    samples = measure_loop(lambda: calls.append(1), warmup=3, min_duration_s=0.0, min_count=57)
    assert samples.shape == (57,) and samples.dtype == np.float64
    assert len(calls) == 3 + 57
    assert np.all(samples >= 0)


def test_measure_loop_runs_until_min_duration():
    samples = measure_loop(lambda: time.sleep(0.002), warmup=1, min_duration_s=0.05, min_count=1)
    assert samples.sum() >= 50.0  # ms of measured time
    assert samples.min() >= 2.0  # each sample timed the sleep, in ms
    assert len(samples) < 50  # stopped soon after reaching the duration


def test_measure_loop_grows_its_buffer():
    # warmup=0 gives no rate estimate, so the buffer starts at min_count=1 and must double many times
    samples = measure_loop(lambda: None, warmup=0, min_duration_s=0.005, min_count=1)
    assert len(samples) > 64
    assert samples.sum() >= 5.0


def test_measure_loop_stops_at_max_duration_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="harness.trackers.latency"):
        samples = measure_loop(lambda: time.sleep(0.01), warmup=0, min_duration_s=0.05, min_count=10_000,
                               max_duration_s=0.1)
    assert 1 <= len(samples) < 10_000
    assert "stopped at max_duration_s=0.1" in caplog.text


def test_measure_loop_rejects_impossible_settings():
    with pytest.raises(ValueError, match="max_duration_s"):
        measure_loop(lambda: None, min_duration_s=2.0, max_duration_s=1.0)
    with pytest.raises(ValueError, match="min_count"):
        measure_loop(lambda: None, min_count=0)
