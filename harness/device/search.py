"""The 1:N watchlist search as a device workload (issue 18): numpy only, Python 3.8, nothing else on the board.

A job of task "search" (harness.jobs.SearchSpec) brings a gallery of templates (float32, one per row) and probe
templates. search(probe) is what a body camera does for every face it sees: the dot products of the L2-normalised
probe with the first `size` normalised gallery rows, then the top k of them (score descending, gallery position
ascending, as NIST FRVT 1:N ranks candidates: Grother, Ngan, Hanaoka, NISTIR 8271, sec. 3). The board

1. checks and loads both matrices (init_ms: load and normalise the gallery, as a device enrols its watchlist),
2. runs the accuracy pass: every probe of the job against the whole gallery, its top-k ids and scores written in
   the same atomic raw-output chunks as inference (out0: int64 ids, out1: float32 scores, one row of k per probe),
3. times single-probe search once per gallery size, cycling through the pool's probes, with the job's warm-up,
   min-count and min-duration (harness.trackers.latency.measure_loop, as for inference), telemetry, CPU share and
   contention sampled over the timed windows, so the host stamps VALID/INVALID by the same rules.
   With a thread count (`--threads`, job.backend.threads) the launcher has bounded numpy's BLAS threads through the
   worker's environment (harness.jobs.blas_environment); the board reports the count its BLAS says it uses
   (harness/device/blas.py), or "as requested" where the library cannot be asked.

Everything it returns is checked on the host (harness/launchers/trust.py `read_search`), which also recomputes the
top k with its own exact scorer (harness/metrics/search.py) and refuses a board whose candidates differ.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.device import blas
from harness.errors import InputError

OUTPUT_NAMES = ("top_index", "top_score")


def templates(path: Path) -> np.ndarray:
    """A .npy matrix of templates as L2-normalised float32 rows; one line naming the file for anything else."""
    try:
        m = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(m, np.ndarray) or m.ndim != 2 or m.dtype.kind != "f" or m.shape[0] == 0 or m.shape[1] == 0:
        raise InputError(f"{path}: is a {getattr(m, 'dtype', '?')} array of shape {getattr(m, 'shape', '?')}, "
                         f"not a non-empty 2-D float matrix of templates")
    m = m.astype(np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if not (np.isfinite(m).all() and (norms > 0).all()):
        raise InputError(f"{path}: holds a template that is not finite or is all zeros")
    return m / norms


def search_one(gallery: np.ndarray, probe: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k gallery positions, their scores) of one normalised probe: dot products, then the k best."""
    s = gallery @ probe
    if k < s.shape[0]:
        idx = np.argpartition(-s, k - 1)[:k]
    else:
        idx = np.arange(s.shape[0])
    order = np.lexsort((idx, -s[idx]))
    idx = idx[order]
    return idx.astype(np.int64), s[idx]


def measure(job, gallery_path: Path, probe_path: Path, add: Callable[[str, float, list], None],
            measured: dict[str, Any], windows, measure_loop) -> np.ndarray:
    """Run the search job; fills `measured` (JobResult fields) and returns the timings of every size, concatenated in
    the order of job.search.sizes (`measured["search"]["counts"]` says how many belong to each)."""
    spec = job.search
    t0 = time.perf_counter_ns()
    G = templates(gallery_path)
    measured["init_ms"] = (time.perf_counter_ns() - t0) / 1e6
    P = templates(probe_path)
    if P.shape[1] != G.shape[1]:
        raise InputError(f"{probe_path}: probe templates have {P.shape[1]} components, the gallery's {G.shape[1]}")
    if spec.sizes[-1] > G.shape[0]:
        raise InputError(f"{gallery_path}: holds {G.shape[0]} templates, the job times a gallery of "
                         f"{spec.sizes[-1]}")
    rows = sorted({r for _, r in job.samples} | set(job.pool_rows))
    if rows and rows[-1] >= P.shape[0]:
        raise InputError(f"{probe_path}: has {P.shape[0]} probes, the job names row {rows[-1]}")
    measured["backend"] = {"runtime": "numpy", "requested": "default", "active": ["numpy"], "ok": True,
                           "numpy": np.__version__}
    measured["output_names"] = OUTPUT_NAMES
    first = P[job.pool_rows[0]]
    t0 = time.perf_counter_ns()
    search_one(G, first, spec.k)
    measured["first_inference_ms"] = (time.perf_counter_ns() - t0) / 1e6

    for sid, row in job.samples:  # accuracy pass: the whole gallery, one probe per call
        t0 = time.perf_counter_ns()
        idx, sc = search_one(G, P[row], spec.k)
        add(sid, (time.perf_counter_ns() - t0) / 1e6, [idx, sc.astype(np.float32)])

    lat = job.latency
    parts = []
    with windows() as record:
        for size in spec.sizes:
            part = np.ascontiguousarray(G[:size])
            probes = itertools.cycle([P[r] for r in job.pool_rows])
            parts.append(measure_loop(lambda: search_one(part, next(probes), spec.k), warmup=lat.warmup,
                                      min_duration_s=lat.min_duration_s, min_count=lat.min_count,
                                      max_duration_s=lat.max_duration_s))
        timings = np.concatenate(parts)
        record(len(timings))
    measured["single_stream_batch"] = 1
    measured["real_faces_per_query"] = 1
    measured["search"] = {"k": spec.k, "dim": int(G.shape[1]), "n_gallery": int(G.shape[0]),
                          "sizes": list(spec.sizes), "counts": [int(len(p)) for p in parts],
                          "blas_threads": blas.threads(job.backend.threads)}
    return timings
