"""The 1:N watchlist search as a device workload (issue 18): numpy only, Python 3.8, nothing else on the board.

A job of task "search" (harness.jobs.SearchSpec) brings the watchlist's gallery templates (float32, one per row) and
probe templates. The board enrols the watchlist in the job's storage precision (`store`, below) as a device keeps
its watchlist, and search(probe) is what a body camera does for every face it sees: the dot products of the
L2-normalised probe with the first `size` stored gallery rows, then the top k of them (score descending, gallery
position ascending, as NIST FRVT 1:N ranks candidates: Grother, Ngan, Hanaoka, NISTIR 8271, sec. 3).

Storage precision (SearchSpec.precision, the variant's): fp32 keeps float32 rows; fp16 keeps float16 rows; int8
keeps one int8 code row and one float32 scale per template, symmetric per-template quantisation:
scale = max|x| / 127, code = round(x / scale) clipped to [-127, 127], zero point 0 (ONNX QuantizeLinear's symmetric
case with a per-axis scale along the template axis, onnx.ai/onnx/operators/onnx__QuantizeLinear.html; FAISS's SQ8,
faiss/impl/ScalarQuantizer.cpp QT_8bit, trains one range per dimension instead, and like it the board decodes codes
to float and takes the inner product with the float query). fp16 and int8 rows are decoded to float32 a block of
DECODE_BLOCK rows at a time, multiplied by the float32 probe through numpy's BLAS, and int8 scores scaled by their
row's scale (dequantised scores). The probe stays float32: asymmetric search, as FAISS's IndexScalarQuantizer.

Gallery sizes beyond the watchlist are padded on the board with seeded synthetic templates (`synthetic_blocks`:
normalised Gaussian draws, uniform on the sphere, Muller 1959), so a gallery of 10^6 x 192 never travels: the job
carries only the seed, and the host regenerates the same rows to check the board's candidates on a sample of probes.
Gallery of size S = the first min(S, n) watchlist rows, then the first S - n synthetic rows (nested prefixes).

The board
1. checks and loads both matrices (init_ms: load, normalise and store the watchlist, as a device enrols it),
2. runs the accuracy pass: every probe of the job against the stored watchlist, its top-k ids and scores written in
   the same atomic raw-output chunks as inference (out0: int64 ids, out1: float32 scores, one row of k per probe),
3. per gallery size: refuses a gallery that would not fit in the memory the board has available (psutil), builds it
   in the storage precision, searches the job's check probes (`check_rows`) once for the host's top-k check, then
   times single-probe search cycling through the pool's probes with the job's warm-up, min-count and min-duration
   (harness.trackers.latency.measure_loop, as for inference), telemetry, CPU share and contention sampled over the
   timed windows, so the host stamps VALID/INVALID by the same rules. Memory per size: the gallery's bytes and the
   worker's RSS growth over the size (psutil samples after each synthetic block, after the build and after the
   timed loop, less the RSS before the build), then the gallery is freed before the next size.
   With a thread count (`--threads`, job.backend.threads) the launcher has bounded numpy's BLAS threads through the
   worker's environment (harness.jobs.blas_environment); the board reports the count its BLAS says it uses
   (harness/device/blas.py), or "as requested" where the library cannot be asked.

Everything it returns is checked on the host (harness/launchers/trust.py `read_search`), which also recomputes the
top k with its own exact scorer on the same stored templates (harness/search_job.py) and refuses a board whose
candidates differ.
"""

from __future__ import annotations

import gc
import itertools
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np

from harness.device import blas
from harness.errors import GalleryTooLarge, InputError

OUTPUT_NAMES = ("top_index", "top_score")
PRECISIONS = ("fp32", "fp16", "int8")
INT8_MAX = 127            # symmetric int8: codes in [-127, 127], zero point 0
SYNTHETIC_BLOCK = 65536   # rows per seeded block of synthetic templates (block j: its own generator)
DECODE_BLOCK = 16384      # fp16/int8 rows decoded to float32 at a time: a bounded scratch, BLAS on each block
MEMORY_HEADROOM = 0.8     # a gallery may take at most this share of the memory the board has available
_MIB = float(1 << 20)


class Stored:
    """Gallery templates in a storage precision: `codes` (n x d: float32, float16 or int8) and, for int8, the
    float32 `scale` of each row (None otherwise)."""

    def __init__(self, codes: np.ndarray, scale: Optional[np.ndarray], precision: str):
        self.codes, self.scale, self.precision = codes, scale, precision

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + (0 if self.scale is None else self.scale.nbytes))

    def dequantised(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Rows [start, stop) as float64: the values the board's scores are computed from."""
        rows = self.codes[start:stop].astype(np.float64)
        return rows if self.scale is None else rows * self.scale[start:stop, None].astype(np.float64)


def bytes_per_row(dim: int, precision: str) -> int:
    """Bytes one stored template takes: codes, plus the int8 row's float32 scale."""
    return {"fp32": 4 * dim, "fp16": 2 * dim, "int8": dim + 4}[precision]


def empty(n: int, dim: int, precision: str) -> Stored:
    if precision not in PRECISIONS:
        raise InputError(f"search.precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    dtype = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8}[precision]
    return Stored(np.empty((n, dim), dtype), np.empty(n, np.float32) if precision == "int8" else None, precision)


def put(g: Stored, start: int, rows: np.ndarray) -> None:
    """Store L2-normalised float32 `rows` at [start, start + len(rows)) in g's precision."""
    stop = start + len(rows)
    if g.precision == "int8":
        scale = (np.abs(rows).max(axis=1) / np.float32(INT8_MAX)).astype(np.float32)
        scale[scale == 0] = np.float32(1)
        g.codes[start:stop] = np.clip(np.rint(rows / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
        g.scale[start:stop] = scale
    else:
        g.codes[start:stop] = rows


def store(rows: np.ndarray, precision: str) -> Stored:
    """L2-normalised float32 rows as a Stored gallery in `precision`."""
    g = empty(len(rows), rows.shape[1], precision)
    put(g, 0, rows)
    return g


def synthetic_blocks(n: int, dim: int, seed: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(first row, float32 unit rows) of the first n synthetic templates, SYNTHETIC_BLOCK rows at a time. Block j is
    drawn from its own generator seeded (seed, j, dim), and a block's first m rows are the same whether m or all of
    it are drawn (Generator.standard_normal fills in order), so every gallery size is a prefix of a larger one."""
    for start in range(0, n, SYNTHETIC_BLOCK):
        m = min(SYNTHETIC_BLOCK, n - start)
        x = np.random.default_rng((seed, start // SYNTHETIC_BLOCK, dim)).standard_normal((m, dim))
        yield start, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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
    return normalised(m)


def normalised(m: np.ndarray) -> np.ndarray:
    """float32 rows divided by their L2 norms: what the board searches (the host calls it too, to check)."""
    m = np.asarray(m, np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def scores(g: Stored, probe: np.ndarray) -> np.ndarray:
    """The float32 scores of one normalised float32 probe against every stored row (dequantised for int8)."""
    if g.precision == "fp32":
        return g.codes @ probe
    out = np.empty(len(g), np.float32)
    for b in range(0, len(g), DECODE_BLOCK):
        out[b:b + DECODE_BLOCK] = g.codes[b:b + DECODE_BLOCK].astype(np.float32) @ probe
    if g.scale is not None:
        out *= g.scale
    return out


def search_one(gallery: Any, probe: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(top-k gallery positions, their scores) of one normalised probe: dot products, then the k best. `gallery` is
    a Stored gallery or a float32 matrix of normalised rows."""
    s = scores(gallery, probe) if isinstance(gallery, Stored) else gallery @ probe
    if k < s.shape[0]:
        idx = np.argpartition(-s, k - 1)[:k]
    else:
        idx = np.arange(s.shape[0])
    order = np.lexsort((idx, -s[idx]))
    idx = idx[order]
    return idx.astype(np.int64), s[idx]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / _MIB


def available_mb() -> float:
    """The memory the board has available now (psutil: what can be used without swapping)."""
    import psutil

    return psutil.virtual_memory().available / _MIB


def gallery_bytes(size: int, dim: int, precision: str) -> int:
    """The memory a search of a gallery of `size` stored rows of `dim` components takes on the board, in bytes: per
    row its stored bytes (bytes_per_row) and a float32 score; per row of one generation block the float64 draws,
    their normalised float64 copy and the float32 rows (20 bytes per component). The one formula: the board checks
    it here (check_fits) and the host before a run is created (harness/search_fit.py)."""
    return size * (bytes_per_row(dim, precision) + 4) + min(size, SYNTHETIC_BLOCK) * dim * 20


def too_large(size: int, dim: int, precision: str, have_mb: float, where: str,
              have: str = "the board has {mb} MiB available") -> Optional[str]:
    """The one-line refusal when a gallery of `size` would take more than MEMORY_HEADROOM of `have_mb`, else None.
    `have` says what `have_mb` is ("{mb}" filled in)."""
    need = gallery_bytes(size, dim, precision)
    if need <= MEMORY_HEADROOM * have_mb * _MIB:
        return None
    return (f"{where}: a gallery of {size:,} {precision} templates of {dim} needs {need:,} bytes "
            f"({need / _MIB:,.0f} MiB), {have.format(mb=f'{have_mb:,.0f}')} (at most {MEMORY_HEADROOM:.0%} of it "
            "is used)")


def check_fits(size: int, dim: int, precision: str, where: str) -> None:
    """GalleryTooLarge (one line) when a gallery of `size` (gallery_bytes) would not fit in MEMORY_HEADROOM of the
    memory the board has available now: the last guard, after the host's own check before the run."""
    reason = too_large(size, dim, precision, available_mb(), where)
    if reason is not None:
        raise GalleryTooLarge(reason)


def gallery_at(watchlist: Stored, size: int, seed: int, on_block: Callable[[], None] = lambda: None) -> Stored:
    """The gallery of `size`: the watchlist's first rows, then seeded synthetic rows, in the watchlist's precision."""
    n_w = min(size, len(watchlist))
    g = empty(size, watchlist.codes.shape[1], watchlist.precision)
    g.codes[:n_w] = watchlist.codes[:n_w]
    if g.scale is not None:
        g.scale[:n_w] = watchlist.scale[:n_w]
    for start, rows in synthetic_blocks(size - n_w, g.codes.shape[1], seed):
        put(g, n_w + start, rows)
        on_block()
    return g


def measure(job, gallery_path: Path, probe_path: Path, add: Callable[[str, float, list], None],
            measured: dict, windows, measure_loop) -> np.ndarray:
    """Run the search job; fills `measured` (JobResult fields) and returns the timings of every size, concatenated in
    the order of job.search.sizes (`measured["search"]["counts"]` says how many belong to each)."""
    spec = job.search
    t0 = time.perf_counter_ns()
    W = store(templates(gallery_path), spec.precision)
    measured["init_ms"] = (time.perf_counter_ns() - t0) / 1e6
    P = templates(probe_path)
    dim = W.codes.shape[1]
    if P.shape[1] != dim:
        raise InputError(f"{probe_path}: probe templates have {P.shape[1]} components, the gallery's {dim}")
    rows = sorted({r for _, r in job.samples} | set(job.pool_rows) | set(spec.check_rows))
    if rows and rows[-1] >= P.shape[0]:
        raise InputError(f"{probe_path}: has {P.shape[0]} probes, the job names row {rows[-1]}")
    for size in spec.sizes:  # before anything is timed: a size that cannot fit is refused whole
        check_fits(size, dim, spec.precision, where=f"search.sizes ({size:,})")
    measured["backend"] = {"runtime": "numpy", "requested": "default", "active": ["numpy"], "ok": True,
                           "numpy": np.__version__}
    measured["output_names"] = OUTPUT_NAMES
    if len(W) < spec.k:
        raise InputError(f"{gallery_path}: holds {len(W)} templates, fewer than the job's k={spec.k}")
    first = P[job.pool_rows[0]]
    t0 = time.perf_counter_ns()
    search_one(W, first, spec.k)
    measured["first_inference_ms"] = (time.perf_counter_ns() - t0) / 1e6

    for sid, row in job.samples:  # accuracy pass: the stored watchlist, one probe per call
        t0 = time.perf_counter_ns()
        idx, sc = search_one(W, P[row], spec.k)
        add(sid, (time.perf_counter_ns() - t0) / 1e6, [idx, sc.astype(np.float32)])

    lat = job.latency
    parts, per_size = [], []
    with windows() as record:
        for size in spec.sizes:
            gc.collect()
            rss0 = _rss_mb()
            peak = [rss0]
            t0 = time.perf_counter_ns()
            g = gallery_at(W, size, spec.seed, on_block=lambda: peak.append(_rss_mb()))
            build_ms = (time.perf_counter_ns() - t0) / 1e6
            peak.append(_rss_mb())
            checked = [search_one(g, P[r], spec.k) for r in spec.check_rows]
            probes = itertools.cycle([P[r] for r in job.pool_rows])
            parts.append(measure_loop(lambda: search_one(g, next(probes), spec.k), warmup=lat.warmup,
                                      min_duration_s=lat.min_duration_s, min_count=lat.min_count,
                                      max_duration_s=lat.max_duration_s))
            peak.append(_rss_mb())
            per_size.append({"size": int(size), "gallery_bytes": g.nbytes, "build_ms": build_ms,
                             "rss_before_mb": rss0, "rss_growth_mb": max(peak) - rss0,
                             "check_index": [c[0].tolist() for c in checked],
                             "check_score": [[float(v) for v in c[1]] for c in checked]})
            g = None  # freed before the next size is built
        timings = np.concatenate(parts)
        record(len(timings))
    measured["single_stream_batch"] = 1
    measured["real_faces_per_query"] = 1
    measured["search"] = {"k": spec.k, "dim": int(dim), "n_gallery": len(W), "precision": spec.precision,
                          "sizes": list(spec.sizes), "counts": [int(len(p)) for p in parts], "per_size": per_size,
                          "blas_threads": blas.threads(job.backend.threads)}
    return timings
