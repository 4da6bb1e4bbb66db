"""Blocked 1:N scoring throughput against this machine's blocked-matmul rate, and its peak memory.

Default: 2,000 probes x 20,000 synthetic gallery templates at MobileFaceNet's 192 dimensions (4e7 comparisons),
small enough for a 2-core CI host. BENCH_SEARCH_SIZE=1e9 runs the issue's 1e9 comparisons (10k probes x 100k
templates) instead: opt-in, it takes minutes per round.

Reported (benchmark extra_info): comparisons/s of `harness.metrics.search.search`, the same machine's rate for
the bare blocked GEMM it is built on, in float64 (the scorer's exact arithmetic) and float32 (what a fast but
partition-dependent scorer would use), their ratios, and the process's peak RSS growth during scoring. Run with
    python -m pytest benchmarks/test_bench_search.py -q --benchmark-columns=mean,rounds
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest

from harness.metrics.search import SearchSettings, quantize, search

DIM = 192


def _sizes() -> tuple[int, int]:
    if float(os.environ.get("BENCH_SEARCH_SIZE", "0") or 0) >= 1e9:
        return 10_000, 100_000
    return 2_000, 20_000


def _unit(rng, n):
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _gemm_rate(P: np.ndarray, G: np.ndarray, settings: SearchSettings, dtype) -> float:
    """Comparisons/s of the blocked matmul alone (same blocks, results discarded)."""
    P, G = P.astype(dtype), G.astype(dtype)
    t0 = time.perf_counter()
    for p0 in range(0, len(P), settings.probe_block):
        for g0 in range(0, len(G), settings.gallery_block):
            P[p0:p0 + settings.probe_block] @ G[g0:g0 + settings.gallery_block].T
    return len(P) * len(G) / (time.perf_counter() - t0)


def test_search_throughput(benchmark):
    n_probes, n_gallery = _sizes()
    rng = np.random.default_rng(0)
    P, G = _unit(rng, n_probes), _unit(rng, n_gallery)
    mates = rng.integers(-1, n_gallery, n_probes)
    groups = rng.integers(0, 8, n_probes)
    settings = SearchSettings(k=20, thresholds=(0.8, 0.95, 0.99), sizes=(100, 1_000, 10_000, n_gallery))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = benchmark.pedantic(search, args=(P, G, mates, groups, 8, settings), rounds=1, iterations=1)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rate = n_probes * n_gallery / benchmark.stats.stats.mean
    f64 = _gemm_rate(quantize(P), quantize(G), settings, np.float64)
    f32 = _gemm_rate(P, G, settings, np.float32)
    benchmark.extra_info.update({
        "comparisons": n_probes * n_gallery, "comparisons_per_s": rate, "gemm_f64_per_s": f64, "gemm_f32_per_s": f32,
        "ratio_to_gemm_f64": rate / f64, "ratio_to_gemm_f32": rate / f32,
        "peak_rss_growth_mb": (rss1 - rss0) / 1024, "result_mb": sum(
            getattr(result, f).nbytes for f in ("top_score", "top_index", "mate_score", "prefix_max", "exceed", "hist"))
        / 2**20})
    assert result.top_score.shape == (n_probes, 20)


def test_search_throughput_dask_loopback(benchmark):
    """The same search on a two-worker LocalCluster (processes, loopback TCP): its time over the in-process time
    (issue 18's goal: <= 1.3)."""
    distributed = pytest.importorskip("distributed")
    from harness.search_cluster import search_on_cluster

    n_probes, n_gallery = _sizes()
    rng = np.random.default_rng(0)
    P, G = _unit(rng, n_probes), _unit(rng, n_gallery)
    mates = rng.integers(-1, n_gallery, n_probes)
    groups = rng.integers(0, 8, n_probes)
    settings = SearchSettings(k=20, thresholds=(0.8, 0.95, 0.99), sizes=(100, 1_000, 10_000, n_gallery))
    t0 = time.perf_counter()
    local = search(P, G, mates, groups, 8, settings)
    t_local = time.perf_counter() - t0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = benchmark.pedantic(search_on_cluster, args=(P, G, mates, groups, 8, settings),
                                    kwargs={"client": client}, rounds=1, iterations=1)
    assert remote.equals(local)
    benchmark.extra_info.update({"comparisons": n_probes * n_gallery, "in_process_s": t_local,
                                 "cluster_s": benchmark.stats.stats.mean,
                                 "ratio_cluster_to_in_process": benchmark.stats.stats.mean / t_local})


LATENCY_SIZES = (1_000, 10_000, 100_000) + ((1_000_000,) if os.environ.get("BENCH_SEARCH_1M") else ())


@pytest.mark.parametrize("n_gallery", LATENCY_SIZES)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_single_probe_search_latency(benchmark, n_gallery, precision):
    """One probe searched against a gallery of n templates at 192 dimensions stored in `precision`, with the board's
    own code (harness/device/search.py: the seeded synthetic templates a search job draws on the board, stored as
    float32, float16 or int8 with a scale per template, scores dequantised, the top 10), on this host. The same
    workload `bench run --search-sizes` times on each target through the job contract; this suite gives it without
    a run. The 1M gallery is opt-in (BENCH_SEARCH_1M=1: 768 MB of float32 templates). extra_info: the gallery's
    bytes and this process's RSS growth while building it."""
    from harness.device.search import gallery_at, normalised, search_one, store
    from harness.trackers.memory import current_rss_mb

    rng = np.random.default_rng(0)
    watchlist = store(normalised(_unit(rng, 100)), precision)
    p = normalised(_unit(rng, 1))[0]
    rss0 = current_rss_mb()
    g = gallery_at(watchlist, n_gallery, seed=0)
    growth = current_rss_mb() - rss0
    idx, _ = benchmark(search_one, g, p, 10)
    benchmark.extra_info.update({"gallery": n_gallery, "precision": precision, "dim": DIM,
                                 "gallery_mb": g.nbytes / 2**20, "rss_growth_mb": growth})
    assert idx.shape == (10,) and len(set(idx.tolist())) == 10
