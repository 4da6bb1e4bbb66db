"""Scale benchmark for verification scoring: 10,000 embeddings, ~50 million impostor pairs, subject bootstrap.

Run: pytest benchmarks/test_bench_metrics.py -q  (not collected by the unit test run: testpaths = tests).
Target on the 2-core development VM: under 10 s and under 2 GB peak RSS for the whole scoring step.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import pytest

from harness.metrics import (
    disparity_rows, pair_scores, per_group_error_rates, threshold_at_fmr, verification_counts,
    verification_disparity_rows,
)

N_EMB, N_SUBJECTS, N_GROUPS, DIMS = 10_000, 5_000, 6, 192
TIME_LIMIT_S, RSS_LIMIT_MB = 10.0, 2048.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def score_all(emb, subjects, groups, path="partials"):
    """`partials`: verification_counts (two blocked passes reduced to counts; what `bench run`/`bench score` use);
    `per_pair`: pair_scores + threshold_at_fmr (every pair's score kept: DET curves, paired rates)."""
    if path == "partials":
        scores = verification_counts(emb, subjects, groups, target_fmr=1e-3, thresholds=[0.8, 0.95, 0.99])
        t = scores.tuned
    else:
        scores = pair_scores(emb, subjects, groups)
        t = threshold_at_fmr(scores, 1e-3)
    # subject-weighted rates with 1,000-resample subject-bootstrap intervals at the tuned threshold and 3 cut-offs
    rows = per_group_error_rates(scores, threshold=t, fixed_thresholds=[0.8, 0.95, 0.99], target_fmr=1e-3,
                                 n_boot=1000, seed=0)
    tuned = [r for r in rows if r["threshold_kind"] == "tuned"]
    disp = disparity_rows(tuned, "fmr") + disparity_rows(tuned, "fnmr") + verification_disparity_rows(tuned)
    return scores, rows, disp


@pytest.mark.slow
@pytest.mark.parametrize("path", ["partials", "per_pair"])
def test_bench_verification_scoring_at_scale(benchmark, path):
    """Run one path per process (-k partials / -k per_pair): peak RSS is the process's."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((N_EMB, DIMS)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    subjects = rng.permutation(np.repeat(np.arange(N_SUBJECTS), N_EMB // N_SUBJECTS))
    groups = np.array([f"g{s % N_GROUPS}" for s in subjects])

    start = time.perf_counter()
    scores, rows, disp = benchmark.pedantic(score_all, args=(emb, subjects, groups, path), rounds=1, iterations=1)
    elapsed = time.perf_counter() - start
    peak = peak_rss_mb()
    n_genuine = int(scores.n_genuine if path == "partials" else scores.genuine.size)
    benchmark.extra_info.update({"seconds": round(elapsed, 2), "peak_rss_mb": round(peak, 1),
                                 "impostor_pairs": scores.n_impostor, "genuine_pairs": n_genuine})
    print(f"\n{path}: scoring {N_EMB} embeddings, {scores.n_impostor} impostor pairs, 1000-resample bootstrap: "
          f"{elapsed:.2f} s, peak RSS {peak:.0f} MB")

    assert scores.n_impostor == N_EMB * (N_EMB - 1) // 2 - N_SUBJECTS  # 2 images a subject: 1 genuine pair each
    tuned = [r for r in rows if r["threshold_kind"] == "tuned" and r["metric"] in ("fmr", "fnmr") and r["group"] != "all"]
    assert len(tuned) == 2 * N_GROUPS and all(r["n_valid"] == 1000 for r in tuned)
    assert {r["summary"] for r in disp} >= {"max_min_ratio", "garbe", "fdr"}
    assert elapsed < TIME_LIMIT_S
    assert peak < RSS_LIMIT_MB
