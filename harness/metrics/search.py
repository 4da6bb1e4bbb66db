"""Exact, blocked, mergeable 1:N search scoring: probes x gallery -> per-probe partial results.

The score matrix is never held whole. Each (probe block x gallery block) is reduced at once to a `SearchPartial`:

- per probe: its top-k non-mate candidates (score, gallery position), the score of its mate (the one gallery
  template of its own identity, if that falls in the block), the best non-mate score within each nested gallery
  prefix (FPIR against gallery size), and how many non-mate templates score at or above each threshold;
- per probe group: a fixed-bin histogram of non-mate scores over [-1, 1] (the impostor distribution).

Partials of one probe range over different gallery blocks merge (`merge`: max, sums, top-k of the union), and
`assemble` stacks probe ranges, so memory is O(probes x k + groups x bins), independent of the number of comparisons,
and any block order or partition gives the same result, bit for bit:

- scores are exact. Embeddings are put on a 2^-20 grid (`quantize`: moves each component by at most 4.8e-7, less
  than the 6-decimal rounding the per-sample records already apply), so every product is a multiple of 2^-40 and
  every partial sum of a dot product of unit vectors is exactly representable in float64: the BLAS summation order
  (which changes with block shape, thread count and CPU) cannot change a score. float32 GEMM is not exact: the same
  dot product differs in its last bits between block shapes (seen on OpenBLAS 0.3.31, docs/metrics.md); the scorer
  multiplies in float32 all the same, as a screen only: harness/metrics/search_kernel.py takes each decision from
  the float32 score where its error bound cannot change it and from the exact float64 score where it can, and
  keeps exact scores only (`_Range`);
- top-k ties are broken by gallery position (lower first), never by where a block boundary fell.

Candidate lists follow NIST FRVT 1:N (Grother, Ngan, Hanaoka, NISTIR 8271 "Face Recognition Vendor Test Part 2:
Identification", 2019, sec. 3): a search returns candidates ranked by score; the mate's rank is 1 + the number of
non-mate candidates scoring at or above it (a tie counts against the mate).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from harness.errors import InputError

GRID = 2.0 ** -20
DEFAULT_BINS = 2000
NO_MATE = -1  # mate position of a probe whose identity is not enrolled (a non-mated search)
# ||p|| ||g|| below this: every partial sum of a grid dot product (a multiple of 2^-40, at most ||p|| ||g|| in
# magnitude) is exact in float64's 53 bits, with a factor 2 to spare for the rounding of the norms
MAX_NORM_PRODUCT = 2.0 ** 12
MAX_THREADS = 8           # threads reducing one block's rows (_threads)
MIN_ROWS_PER_THREAD = 64  # fewer rows per thread: the thread hand-off costs more than it saves
TILE_COLUMNS = 1024       # templates multiplied and reduced at a time per row slice: its scores stay in cache


def quantize(emb: np.ndarray) -> np.ndarray:
    """float64 copy of `emb` on the 2^-20 grid: dot products of such unit vectors are exact in float64."""
    q = np.array(emb, dtype=np.float64)  # one copy, then in place: no temporaries the size of a gallery
    q /= GRID
    np.round(q, out=q)
    q *= GRID
    return q


def unit_grid(emb: np.ndarray) -> np.ndarray:
    """Rows re-normalised to unit length in float64, then put on the grid (`quantize`): the rows `similarity`
    takes. (A zero or non-finite row gives a row of NaN; callers that must refuse one check first.)"""
    e = np.asarray(emb, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return quantize(e / np.linalg.norm(e, axis=-1, keepdims=True))


def similarity(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The one similarity of the harness: rows of `a` against rows of `b`, both quantized unit rows (`quantize`),
    as float64 dot products, exact (see the module docstring), so any block shape or order gives the same score.
    1:N search (`score_block`) and 1:1 verification (harness.metrics.verification.pair_scores) both score here."""
    return np.matmul(a, b.T, out=out)


@dataclass(frozen=True)
class SearchSettings:
    k: int = 20                                   # candidates kept per probe (rank-k hit rate, FNIR at rank <= k)
    thresholds: tuple[float, ...] = ()            # exceedance counts are kept at these scores
    sizes: tuple[int, ...] = ()                   # nested gallery prefixes (gallery positions 0..size-1)
    bins: int = DEFAULT_BINS                      # histogram bins over [-1, 1]
    probe_block: int = 1024
    gallery_block: int = 4096

    def __post_init__(self) -> None:
        if self.k < 1 or self.bins < 1 or self.probe_block < 1 or self.gallery_block < 1:
            raise InputError("search settings: k, bins and block sizes must be >= 1")
        if self.bins > 2**31 - 1:
            raise InputError("search settings: bins must be below 2^31")
        if list(self.sizes) != sorted(set(self.sizes)) or any(s < 1 for s in self.sizes):
            raise InputError("search settings: nested gallery sizes must be increasing and >= 1")


@dataclass
class SearchPartial:
    """Partial results of probes [p0, p1) over some gallery templates (`n_seen` of them)."""

    p0: int
    p1: int
    n_seen: int
    top_score: np.ndarray    # (n, k) float64, descending; -inf where fewer than k candidates were seen
    top_index: np.ndarray    # (n, k) int64 gallery positions; -1 with -inf
    mate_score: np.ndarray   # (n,) float64; -inf when the mate was not seen (or there is none)
    prefix_max: np.ndarray   # (n, len(sizes)) float64 best non-mate score among positions < size
    exceed: np.ndarray       # (n, len(thresholds)) int64 non-mate templates scoring >= threshold
    hist: np.ndarray         # (n_groups, bins) int64 non-mate scores per probe group
    rescored: int = 0        # scores recomputed exactly (the float32 screen too near a decision); not a result

    def equals(self, other: "SearchPartial") -> bool:
        return (self.p0, self.p1, self.n_seen) == (other.p0, other.p1, other.n_seen) and all(
            np.array_equal(getattr(self, f), getattr(other, f))
            for f in ("top_score", "top_index", "mate_score", "prefix_max", "exceed", "hist"))


CHECK_ROWS = 4096  # rows checked at a time: the checks' temporaries stay one block's, whatever the gallery


def _float32_copy(Q: np.ndarray) -> np.ndarray | None:
    """`Q` as float32 when that holds every value exactly (grid values of unit rows need 21 of its 24 significant
    bits), else None. float32 rows are taken as they are."""
    if Q.dtype == np.float32:
        return Q
    Q32 = Q.astype(np.float32)
    exact = all(np.array_equal(Q32[i:i + CHECK_ROWS], Q[i:i + CHECK_ROWS]) for i in range(0, len(Q), CHECK_ROWS))
    return Q32 if exact else None


def _norms(Q: np.ndarray) -> np.ndarray:
    """Row norms, in float64."""
    return np.concatenate([np.sqrt(np.einsum("ij,ij->i", *(np.asarray(Q[i:i + CHECK_ROWS], np.float64),) * 2))
                           for i in range(0, len(Q), CHECK_ROWS)] or [np.zeros(0)])


def _finite(Q: np.ndarray) -> bool:
    return all(np.isfinite(Q[i:i + CHECK_ROWS]).all() for i in range(0, len(Q), CHECK_ROWS))


class _Range:
    """The running partial of probes [p0, p1) as gallery blocks are added in ascending order (`add`), reduced by
    the fused kernel (harness/metrics/search_kernel.py) from reused buffers of scores (a float32 tile per row
    slice, or one float64 block in the fallback).

    Scores are screened in float32 (BLAS sgemm: half the time of float64 and half the bytes) when the rows are
    exact in float32 and ||p|| ||g|| < 2^12 (so every partial sum of the exact float64 dot product is exact, for
    any summation order): the kernel takes each decision from the float32 score where the error bound
    (search_kernel.screen_eps) cannot change it, and from the exact float64 score where it can, so the result is
    the exact scorer's, bit for bit. Otherwise (rows too large for float32 or for the exact sums) this probe range
    is scored in float64 (`similarity`) as before, and the kernel takes those scores as they are."""

    def __init__(self, P: np.ndarray, G: np.ndarray, mates: np.ndarray, groups: np.ndarray, p0: int, p1: int,
                 settings: SearchSettings, n_groups: int, gallery32: np.ndarray | None = None,
                 gallery_norm: float | None = None, floor: np.ndarray | None = None,
                 scratch: np.ndarray | None = None, threads: int | None = None):
        from harness.metrics.search_kernel import bin_eps, screen_eps

        n, k = p1 - p0, settings.k
        self.p0, self.p1, self.settings, self.G, self.n_seen, self.rescored = p0, p1, settings, G, 0, 0
        self.mates, self.groups = np.ascontiguousarray(mates[p0:p1], np.int64), np.ascontiguousarray(groups[p0:p1],
                                                                                                      np.int64)
        if n and (self.groups.min() < 0 or self.groups.max() >= n_groups):
            raise InputError(f"search: probe group codes must be in 0..{n_groups - 1}")
        P32 = _float32_copy(P[p0:p1])
        G32 = gallery32 if gallery32 is not None else _float32_copy(G)
        p_norm = _norms(P[p0:p1])
        if gallery_norm is None:
            gallery_norm = float(_norms(G).max()) if len(G) else 0.0
        self.screened = (P32 is not None and G32 is not None and bool(np.isfinite(p_norm).all())
                         and np.isfinite(gallery_norm)
                         and float(p_norm.max(initial=0.0)) * gallery_norm < MAX_NORM_PRODUCT)
        if self.screened:
            self.P, self.G_rows = P32, G32
            self.eps = screen_eps(P.shape[1], p_norm, gallery_norm)
            self.bin_eps = bin_eps(self.eps, p_norm * gallery_norm + self.eps, settings.bins)
        else:
            self.P, self.G_rows = np.asarray(P[p0:p1], np.float64), None
            self.eps = self.bin_eps = np.zeros(n)
        # scores: the screen's, a tile of TILE_COLUMNS per row slice; the fallback's, one float64 block
        self.buffer = None if self.screened else (
            scratch if (scratch is not None and scratch.dtype == np.float64
                        and scratch.size >= n * min(settings.gallery_block, max(len(G), 1)))
            else np.empty(n * min(settings.gallery_block, max(len(G), 1))))
        self.floor = np.full(n, -np.inf) if floor is None else np.ascontiguousarray(floor, np.float64)
        self.cuts = np.asarray(settings.thresholds, np.float64)
        self.top_score, self.top_index = np.full((n, k), -np.inf), np.full((n, k), -1, np.int64)
        self.mate_score = np.full(n, -np.inf)
        self.prefix_max = np.full((n, len(settings.sizes)), -np.inf)
        self.exceed = np.zeros((n, len(settings.thresholds)), np.int64)
        # one histogram per row slice (`_slices`): threads never write the same memory; summed in `partial`
        self.slices = _slices(n, threads)
        self.hists = [np.zeros((n_groups, settings.bins), np.int64) for _ in self.slices]
        self.tiles = [np.empty((r1 - r0) * TILE_COLUMNS, np.float32) for r0, r1 in self.slices] \
            if self.screened else []

    def add(self, g0: int, g1: int) -> None:
        """Gallery positions [g0, g1), above every position added before.

        Screened: each row slice (one per thread) multiplies TILE_COLUMNS templates at a time into its own tile
        and reduces it while the tile is in cache; with more than one slice BLAS is held to one thread meanwhile
        (`_one_blas_thread`), so both steps use every core and no BLAS thread spins beside the reduction. The
        float32 scores are only a screen, so the GEMM's shape does not matter, and reducing a block tile by tile
        is reducing smaller gallery blocks, which gives the same result. Float64 scores (the fallback) are
        multiplied as one block, as the scorer always has."""
        n, m = self.p1 - self.p0, g1 - g0
        if self.screened:
            G = self.G_rows[g0:g1]

            def work(j: int) -> int:
                (r0, r1), done = self.slices[j], 0
                for c0 in range(0, m, TILE_COLUMNS):
                    c1 = min(c0 + TILE_COLUMNS, m)
                    s = self.tiles[j][:(r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
                    np.matmul(self.P[r0:r1], G[c0:c1].T, out=s)
                    done += self._reduce(s, r0, r1, G[c0:c1], g0 + c0, self.hists[j])
                return done
        else:
            if self.buffer.size < n * m:
                self.buffer = np.empty(n * m)
            s_all = self.buffer[:n * m].reshape(n, m)
            G = np.asarray(self.G[g0:g1], np.float64)
            similarity(self.P, G, out=s_all)   # exact (see module docstring)
            if not np.isfinite(s_all).all():
                raise InputError("search: scores are not finite (rows too large for float64)")

            def work(j: int) -> int:
                r0, r1 = self.slices[j]
                return self._reduce(s_all[r0:r1], r0, r1, G, g0, self.hists[j])

        if len(self.slices) == 1:
            self.rescored += work(0)
        else:
            with _one_blas_thread() if self.screened else contextlib.nullcontext():
                futures = [_pool().submit(work, j) for j in range(1, len(self.slices))]
                self.rescored += work(0) + sum(f.result() for f in futures)
        self.n_seen += m

    def _reduce(self, s: np.ndarray, r0: int, r1: int, G: np.ndarray, g0: int, hist: np.ndarray) -> int:
        """The kernel over rows r0..r1 (s: their scores against G, gallery positions g0..)."""
        from harness.metrics.search_kernel import reduce_rows

        ends = np.clip(np.asarray(self.settings.sizes, np.int64) - g0, 0, s.shape[1])
        return reduce_rows(s, self.P[r0:r1], G, g0, 0, r1 - r0, self.mates[r0:r1], self.groups[r0:r1],
                           self.eps[r0:r1], self.bin_eps[r0:r1], self.cuts, ends, self.settings.bins,
                           self.floor[r0:r1], self.top_score[r0:r1], self.top_index[r0:r1],
                           self.mate_score[r0:r1], self.prefix_max[r0:r1], self.exceed[r0:r1], hist)

    def partial(self) -> SearchPartial:
        return SearchPartial(self.p0, self.p1, self.n_seen, self.top_score, self.top_index, self.mate_score,
                             self.prefix_max, self.exceed, sum(self.hists[1:], self.hists[0]), self.rescored)


def _threads() -> int:
    """Threads that reduce one block's rows side by side (the kernel releases the GIL): this process's CPUs, at
    most MAX_THREADS. Rows are independent and each thread has its own histogram, so the result is the same for
    any number."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def _slices(n: int, threads: int | None = None) -> list[tuple[int, int]]:
    """Row ranges of a probe range, one per thread (`threads`, default `_threads()`), none smaller than
    MIN_ROWS_PER_THREAD."""
    parts = max(1, min(threads or _threads(), n // MIN_ROWS_PER_THREAD))
    return [(n * j // parts, n * (j + 1) // parts) for j in range(parts)]


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread():
    """BLAS held to one thread while the scorer's own threads each multiply their rows (threadpoolctl; the
    setting is the process's, restored on exit)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="search")


def score_block(probes: np.ndarray, mate_pos: np.ndarray, probe_group: np.ndarray, p0: int, p1: int,
                gallery: np.ndarray, g0: int, g1: int, settings: SearchSettings, n_groups: int,
                floor: np.ndarray | None = None, scratch: np.ndarray | None = None) -> SearchPartial:
    """The partial of probes [p0, p1) against gallery positions [g0, g1). `probes`/`gallery` are quantized rows;
    `floor`: per probe, a score a candidate must reach (the k-th best already held, or None): the block's list
    then holds only its k best at or above it, and merged with the held list the result is the same; `scratch`: a
    flat float64 buffer to reuse for the block's scores where they are float64 (the fallback), or None."""
    part = _Range(probes, gallery, mate_pos, probe_group, p0, p1, settings, n_groups, floor=floor, scratch=scratch)
    part.add(g0, g1)
    return part.partial()


def merge_top_k(a_s: np.ndarray, a_i: np.ndarray, b_s: np.ndarray, b_i: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Two per-row top lists (scores, positions) of the same rows over disjoint positions -> the k best per row:
    score descending, then position ascending (the scorer's one top-k rule)."""
    both_s = np.concatenate([a_s, b_s], axis=1)
    both_i = np.concatenate([a_i, b_i], axis=1)
    order = np.lexsort((both_i, -both_s), axis=1)[:, :k]
    return np.take_along_axis(both_s, order, axis=1), np.take_along_axis(both_i, order, axis=1)


def block_top_k(s: np.ndarray, g0: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a block of scores `s` at gallery positions g0.., its k best by the scorer's rule (-inf / -1
    where fewer than k), for callers outside the blocked search (the host's check of an on-board search)."""
    from harness.metrics.search_kernel import top_k_rows

    s = np.ascontiguousarray(s, np.float64)
    top_s, top_i = np.full((s.shape[0], k), -np.inf), np.full((s.shape[0], k), -1, np.int64)
    top_k_rows(s, g0, top_s, top_i)
    top_i[~np.isfinite(top_s)] = -1  # as the blocked search's lists: a position only with a finite score
    return top_s, top_i


def merge(a: SearchPartial, b: SearchPartial, k: int) -> SearchPartial:
    """Two partials of the same probes over disjoint gallery blocks -> one. Commutative and associative."""
    if (a.p0, a.p1) != (b.p0, b.p1):
        raise ValueError(f"merge: probe ranges differ ({a.p0}:{a.p1} vs {b.p0}:{b.p1})")
    top_s, top_i = merge_top_k(a.top_score, a.top_index, b.top_score, b.top_index, k)
    return SearchPartial(a.p0, a.p1, a.n_seen + b.n_seen, top_s, top_i, np.maximum(a.mate_score, b.mate_score),
                         np.maximum(a.prefix_max, b.prefix_max), a.exceed + b.exceed, a.hist + b.hist,
                         a.rescored + b.rescored)


def assemble(partials: Iterable[SearchPartial], n_probes: int, n_gallery: int, k: int) -> SearchPartial:
    """Partials in any order, of any probe x gallery partition -> the result for all probes over all templates.

    Histograms are per probe group over every probe, so they are summed once per probe range."""
    by_range: dict[tuple[int, int], SearchPartial] = {}
    for part in partials:
        key = (part.p0, part.p1)
        by_range[key] = part if key not in by_range else merge(by_range[key], part, k)
    ranges = sorted(by_range)
    covered = 0
    for p0, p1 in ranges:
        if p0 != covered or by_range[(p0, p1)].n_seen != n_gallery:
            raise ValueError(f"assemble: probes {p0}:{p1} cover {by_range[(p0, p1)].n_seen} of {n_gallery} "
                             f"templates, or leave a gap before {p0}")
        covered = p1
    if covered != n_probes:
        raise ValueError(f"assemble: partials cover probes 0:{covered} of {n_probes}")
    parts = [by_range[r] for r in ranges]
    return SearchPartial(0, n_probes, n_gallery, *(np.concatenate([getattr(p, f) for p in parts])
                                                   for f in ("top_score", "top_index", "mate_score", "prefix_max",
                                                             "exceed")),
                         sum(p.hist for p in parts), sum(p.rescored for p in parts))


def blocks(n_probes: int, n_gallery: int, settings: SearchSettings) -> list[tuple[int, int, int, int]]:
    """(p0, p1, g0, g1) of every block, probe-major."""
    return [(p0, min(p0 + settings.probe_block, n_probes), g0, min(g0 + settings.gallery_block, n_gallery))
            for p0 in range(0, n_probes, settings.probe_block)
            for g0 in range(0, n_gallery, settings.gallery_block)]


def probe_range(P: np.ndarray, G: np.ndarray, mates: np.ndarray, groups: np.ndarray, p0: int, p1: int,
                settings: SearchSettings, n_groups: int, *, gallery32: np.ndarray | None = None,
                gallery_norm: float | None = None, threads: int | None = None) -> SearchPartial:
    """Probes [p0, p1) (quantized rows of P) against the whole gallery, block by block into one running partial,
    so at most one block of scores (probe_block x gallery_block) exists at a time. The unit of work that runs
    in-process or on a Dask worker (harness/search_cluster.py). `gallery32`/`gallery_norm`: G as float32 (when
    that is exact) and its largest row norm, if the caller has them (search() computes them once for all ranges);
    G itself may be those float32 rows. `threads`: how many threads share the range's rows (default: this
    process's CPUs, `_threads`); a Dask task takes 1, the cluster runs tasks side by side instead."""
    acc = _Range(P, G, mates, groups, p0, p1, settings, n_groups, gallery32, gallery_norm, threads=threads)
    for g0 in range(0, len(G), settings.gallery_block):
        acc.add(g0, min(g0 + settings.gallery_block, len(G)))
    return acc.partial()


def prepare(probes: np.ndarray, gallery: np.ndarray, mate_pos: Sequence[int], probe_group: Sequence[int]):
    """(quantized probes, quantized gallery, mate positions, probe group codes), checked."""
    P, G = quantize(probes), quantize(gallery)
    if P.ndim != 2 or G.ndim != 2 or P.shape[1] != G.shape[1]:
        raise InputError(f"search: probe shape {P.shape} and gallery shape {G.shape} do not match")
    if not (_finite(P) and _finite(G)):
        raise InputError("search: probe or gallery rows hold NaN or infinite values")
    return P, G, np.asarray(mate_pos, np.int64), np.asarray(probe_group, np.int64)


def search(probes: np.ndarray, gallery: np.ndarray, mate_pos: Sequence[int], probe_group: Sequence[int],
           n_groups: int, settings: SearchSettings) -> SearchPartial:
    """In-process blocked search of every probe against the whole gallery."""
    P, G, mates, groups = prepare(probes, gallery, mate_pos, probe_group)
    G32, g_norm = _float32_copy(G), float(_norms(G).max()) if len(G) else 0.0
    done = [probe_range(P, G, mates, groups, p0, min(p0 + settings.probe_block, len(P)), settings, n_groups,
                        gallery32=G32, gallery_norm=g_norm)
            for p0 in range(0, len(P), settings.probe_block)] if len(G) else []
    return assemble(done, len(P), len(G), settings.k)


def mate_rank(result: SearchPartial) -> np.ndarray:
    """Per probe: the mate's rank among the candidates (1 = first), k + 1 when beyond the kept k or absent."""
    k = result.top_score.shape[1]
    ahead = (result.top_score >= result.mate_score[:, None]).sum(axis=1)
    rank = ahead + 1
    return np.where(np.isfinite(result.mate_score) & (rank <= k), rank, k + 1)
