"""Single-stream latency: a low-overhead timing loop and the statistics the run record stores.

The loop keeps every raw per-iteration time (timings/<entry>.npy) and derives the summary from it, so any
statistic can be recomputed later from the stored samples.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000
_MEDIAN_CI_LEVEL = 0.95


def median_ci(sorted_ms: np.ndarray, level: float = _MEDIAN_CI_LEVEL) -> tuple[float, float] | None:
    """Distribution-free confidence interval for the median from order statistics.

    The number of samples below the true median is Binomial(n, 1/2) whatever the latency distribution, so
    [x_(l), x_(n-l+1)] (1-based order statistics) covers the median with probability
    1 - 2 * P(B <= l - 1). We take the largest l with P(B <= l - 1) < (1 - level) / 2, which gives coverage of at
    least `level` (conservative: the binomial is discrete). Latency distributions are skewed and multi-modal, so
    a normal-theory interval would be wrong; this one needs no assumption. Returns None when n is too small for
    any pair of order statistics to reach `level` (n < 6 at 95%).
    """
    from scipy import stats as scipy_stats  # here, not at the top: the device worker times loops without scipy

    n = len(sorted_ms)
    if n == 0:
        return None
    l = int(scipy_stats.binom.ppf((1.0 - level) / 2.0, n, 0.5))  # smallest k with cdf(k) >= alpha/2 -> cdf(k-1) < alpha/2
    if l < 1:
        return None
    return float(sorted_ms[l - 1]), float(sorted_ms[n - l])


@dataclass(frozen=True)
class LatencyStats:
    """Summary of single-stream latencies in milliseconds (field names match run.json speed.single_stream)."""

    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    p50_ci_ms: tuple[float, float] | None  # 95% distribution-free CI for the median, None when count < 6
    duration_s: float  # time spent inside the measured calls (sum of samples); loop overhead adds < 2% wall time

    @classmethod
    def from_ms(cls, samples: np.ndarray) -> "LatencyStats":
        """Summarise raw per-iteration latencies (ms). Percentiles use numpy's default linear interpolation."""
        x = np.asarray(samples, dtype=np.float64).ravel()
        if x.size == 0:
            raise ValueError("LatencyStats.from_ms: no samples")
        if not np.all(np.isfinite(x)):
            raise ValueError("LatencyStats.from_ms: samples contain NaN or inf")
        x = np.sort(x)
        p50, p90, p95, p99, p999 = np.percentile(x, [50, 90, 95, 99, 99.9])
        return cls(
            count=int(x.size),
            mean_ms=float(x.mean()),
            std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
            min_ms=float(x[0]),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p95_ms=float(p95),
            p99_ms=float(p99),
            p999_ms=float(p999),
            max_ms=float(x[-1]),
            p50_ci_ms=median_ci(x),
            duration_s=float(x.sum() / 1000.0),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the CI becomes a [lo, hi] list or None."""
        d = asdict(self)
        d["p50_ci_ms"] = list(self.p50_ci_ms) if self.p50_ci_ms is not None else None
        return d


def measure_loop(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    min_duration_s: float = 1.0,
    min_count: int = 100,
    max_duration_s: float = 60.0,
) -> np.ndarray:
    """Call `fn` repeatedly and return per-call latencies in ms (float64), MLPerf single-stream style.

    Runs `warmup` untimed calls, then times calls until BOTH `min_duration_s` of measured time and `min_count`
    calls are reached; if `max_duration_s` of wall time passes first it stops and logs a warning (the short
    result is then flagged INVALID by trackers.validity, not hidden).

    Defaults: 10 warm-up calls cover lazy allocation, kernel selection and cache warm-up in onnxruntime/LiteRT
    (the first call is recorded separately as first_inference_ms by the scenario). MLPerf single-stream asks for
    600 s and 1024 queries, which is far too long for a sweep of 3 models x 6 variants on a 2-core box; >= 1 s and
    >= 100 calls gives a stable median (95% CI from ranks 40..61 of 100) and a p90/p95 estimate in seconds.
    60 s max bounds a pathological slow variant. p99/p99.9 need >= 1000 calls to mean anything: raise
    min_count for tail-latency studies.

    Overhead: each iteration is two perf_counter_ns() calls, one numpy int64 store and two integer compares; the
    buffer is preallocated from a warm-up estimate and grown by doubling, so no Python objects are appended inside
    the loop. Each sample times only fn() (t0 just before, t1 just after).
    """
    if min_count < 1:
        raise ValueError(f"measure_loop: min_count must be >= 1, got {min_count}")
    if max_duration_s < min_duration_s:
        raise ValueError(f"measure_loop: max_duration_s {max_duration_s} < min_duration_s {min_duration_s}")

    clock = time.perf_counter_ns
    warm_start = clock()
    for _ in range(warmup):
        fn()
    warm_ns = clock() - warm_start

    # Size the buffer so the usual case never grows: enough for min_duration at the warm-up rate, +25% slack.
    expected = min_count
    if warmup > 0 and warm_ns > 0:
        per_call_ns = warm_ns / warmup
        expected = max(min_count, math.ceil(min_duration_s * 1e9 / per_call_ns * 1.25))
    buf = np.empty(min(expected, 10_000_000), dtype=np.int64)
    capacity = buf.shape[0]

    min_ns = int(min_duration_s * 1e9)
    max_ns = int(max_duration_s * 1e9)
    measured_ns = 0
    i = 0
    wall_start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        dt = t1 - t0
        buf[i] = dt
        i += 1
        measured_ns += dt
        if measured_ns >= min_ns and i >= min_count:
            break
        if t1 - wall_start >= max_ns:
            log.warning(
                "measure_loop: stopped at max_duration_s=%g after %d calls (%.3f s measured); "
                "wanted >= %d calls and >= %g s", max_duration_s, i, measured_ns / 1e9, min_count, min_duration_s,
            )
            break
        if i == capacity:
            grown = np.empty(capacity * 2, dtype=np.int64)
            grown[:capacity] = buf
            buf, capacity = grown, capacity * 2
    return buf[:i] / _NS_PER_MS
