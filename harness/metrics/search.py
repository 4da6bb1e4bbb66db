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
  dot product differs in its last bits between block shapes (seen on OpenBLAS 0.3.31, docs/metrics.md);
- top-k ties are broken by gallery position (lower first), never by where a block boundary fell.

Candidate lists follow NIST FRVT 1:N (Grother, Ngan, Hanaoka, NISTIR 8271 "Face Recognition Vendor Test Part 2:
Identification", 2019, sec. 3): a search returns candidates ranked by score; the mate's rank is 1 + the number of
non-mate candidates scoring at or above it (a tie counts against the mate).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import InputError

GRID = 2.0 ** -20
DEFAULT_BINS = 2000
NO_MATE = -1  # mate position of a probe whose identity is not enrolled (a non-mated search)


def quantize(emb: np.ndarray) -> np.ndarray:
    """float64 copy of `emb` on the 2^-20 grid: dot products of such unit vectors are exact in float64."""
    return np.round(np.asarray(emb, dtype=np.float64) / GRID) * GRID


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

    def equals(self, other: "SearchPartial") -> bool:
        return (self.p0, self.p1, self.n_seen) == (other.p0, other.p1, other.n_seen) and all(
            np.array_equal(getattr(self, f), getattr(other, f))
            for f in ("top_score", "top_index", "mate_score", "prefix_max", "exceed", "hist"))


class _Scratch:
    """Buffers reused by every block of one probe range: a block's scores, a mask and its bin numbers are written
    into the same memory each time instead of fresh pages (first-touch page faults on a fresh 32 MB block cost
    about as much as the GEMM that fills it)."""

    def __init__(self, size: int):
        self.scores = np.empty(size)
        self.mask = np.empty(size, bool)
        self.bins = np.empty(size, np.intp)  # np.bincount's own type: no converted copy

    def views(self, n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if n * m > self.scores.size:
            self.__init__(n * m)
        return (self.scores[:n * m].reshape(n, m), self.mask[:n * m].reshape(n, m),
                self.bins[:n * m].reshape(n, m))


def _chunk_floor(s: np.ndarray, k: int) -> np.ndarray:
    """Per row, a lower bound on its k-th best entry: the smallest of the maxima of k disjoint column ranges (k
    distinct entries are at least that high). One read of the block instead of np.partition's copy and select."""
    starts = (np.arange(k) * s.shape[1]) // k
    return np.maximum.reduceat(s, starts, axis=1).min(axis=1)


def _block_top_k(s: np.ndarray, mask: np.ndarray, g0: int, k: int,
                 floor: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a block's scores `s` (gallery positions g0..), its k best (score desc, position asc); -inf / -1
    where fewer than k finite scores.

    Only entries at or above a per-row lower bound on what can enter the merged top k are sorted: `floor`, the
    k-th best score already held for that row by an earlier block of the same probes (an entry below it cannot
    enter the merged list), or where a row has none, the block's own _chunk_floor. Ties at the bound are kept, so
    the position tie-break sees them all; the block's own list may hold fewer than k, and merged with the held
    list the result is the same."""
    n, m = s.shape
    if m == 0 or n == 0:
        return np.full((n, k), -np.inf), np.full((n, k), -1, np.int64)
    if floor is None or not np.isfinite(floor).all():
        own = _chunk_floor(s, k) if m > k else np.full(n, -np.inf)
        floor = own if floor is None else np.fmax(floor, own)
    np.greater_equal(s, floor[:, None], out=mask)
    idx = np.flatnonzero(mask)
    rows = idx // m
    # Candidates come row by row, positions ascending within a row: laid out one row per line (padded with -inf),
    # a stable sort by score alone keeps tied scores in position order, which is the tie-break. Far cheaper than a
    # three-key lexsort of every candidate.
    counts = np.bincount(rows, minlength=n)
    width = max(int(counts.max()) if n else 0, k)
    rank = np.arange(idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
    vals = np.full((n, width), np.inf)
    vals[rows, rank] = -s.ravel()[idx]
    pos = np.full((n, width), -1, np.int64)
    pos[rows, rank] = idx - rows * m + g0
    order = np.argsort(vals, axis=1, kind="stable")[:, :k]
    top_s = -np.take_along_axis(vals, order, axis=1)
    top_i = np.take_along_axis(pos, order, axis=1)
    top_i[~np.isfinite(top_s)] = -1
    return top_s, top_i


def score_block(probes: np.ndarray, mate_pos: np.ndarray, probe_group: np.ndarray, p0: int, p1: int,
                gallery: np.ndarray, g0: int, g1: int, settings: SearchSettings, n_groups: int,
                floor: np.ndarray | None = None, scratch: "_Scratch | None" = None) -> SearchPartial:
    """The partial of probes [p0, p1) against gallery positions [g0, g1). `probes`/`gallery` are quantized rows;
    `floor`: the k-th best non-mate score already held per probe (see _block_top_k), or None; `scratch`: buffers
    to reuse (probe_range passes one for all its blocks)."""
    n, m = p1 - p0, g1 - g0
    s, mask, bins = (scratch or _Scratch(n * m)).views(n, m)
    similarity(probes[p0:p1], gallery[g0:g1], out=s)   # exact (see module docstring)
    mates = mate_pos[p0:p1]
    has = (mates >= g0) & (mates < g1)
    mate_score = np.full(n, -np.inf)
    rows = np.flatnonzero(has)
    mate_score[rows] = s[rows, mates[rows] - g0]
    s[rows, mates[rows] - g0] = -np.inf            # the mate is not a candidate of its own search's non-mates
    top_score, top_index = _block_top_k(s, mask, g0, settings.k, floor)
    prefix = np.full((n, len(settings.sizes)), -np.inf)
    for j, size in enumerate(settings.sizes):
        hi = min(size, g1) - g0
        if hi > 0:
            prefix[:, j] = s[:, :hi].max(axis=1)
    exceed = _exceedances(s, mask, settings.thresholds)
    # Last use of s: turn it into bin numbers in place. -inf (the masked mates) lands in bin 0 and is taken out
    # again; truncation to int is floor because the values are >= 0 by then. Each probe's bins are offset by its
    # group's, so one bincount fills every group's histogram.
    half = settings.bins / 2.0
    np.multiply(s, half, out=s)
    np.add(s, half, out=s)
    np.clip(s, 0, settings.bins - 1, out=s)
    np.copyto(bins, s, casting="unsafe")
    block_groups = probe_group[p0:p1]
    bins += (block_groups * settings.bins)[:, None]
    hist = np.bincount(bins.ravel(), minlength=n_groups * settings.bins).reshape(n_groups, settings.bins)
    hist[:, 0] -= np.bincount(block_groups[has], minlength=n_groups)
    return SearchPartial(p0, p1, m, top_score, top_index, mate_score, prefix, exceed, hist)


def _exceedances(s: np.ndarray, mask: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(n, len(thresholds)) int64: per row, the entries >= each threshold. The entries at or above the lowest
    threshold are found once and counted at every threshold; where they are many (a low cut-off) each threshold
    is counted over the block instead."""
    n, m = s.shape
    out = np.zeros((n, len(thresholds)), np.int64)
    if not thresholds or not s.size:
        return out
    np.greater_equal(s, min(thresholds), out=mask)
    idx = np.flatnonzero(mask)
    if idx.size > s.size // 8:
        for j, t in enumerate(thresholds):
            np.greater_equal(s, t, out=mask)
            out[:, j] = np.count_nonzero(mask, axis=1)
        return out
    rows, vals = idx // m, s.ravel()[idx]
    for j, t in enumerate(thresholds):
        out[:, j] = np.bincount(rows[vals >= t], minlength=n)
    return out


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
    s = np.ascontiguousarray(s, np.float64)
    return _block_top_k(s, np.empty(s.shape, bool), g0, k, None)


def merge(a: SearchPartial, b: SearchPartial, k: int) -> SearchPartial:
    """Two partials of the same probes over disjoint gallery blocks -> one. Commutative and associative."""
    if (a.p0, a.p1) != (b.p0, b.p1):
        raise ValueError(f"merge: probe ranges differ ({a.p0}:{a.p1} vs {b.p0}:{b.p1})")
    top_s, top_i = merge_top_k(a.top_score, a.top_index, b.top_score, b.top_index, k)
    return SearchPartial(a.p0, a.p1, a.n_seen + b.n_seen, top_s, top_i, np.maximum(a.mate_score, b.mate_score),
                         np.maximum(a.prefix_max, b.prefix_max), a.exceed + b.exceed, a.hist + b.hist)


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
                         sum(p.hist for p in parts))


def blocks(n_probes: int, n_gallery: int, settings: SearchSettings) -> list[tuple[int, int, int, int]]:
    """(p0, p1, g0, g1) of every block, probe-major."""
    return [(p0, min(p0 + settings.probe_block, n_probes), g0, min(g0 + settings.gallery_block, n_gallery))
            for p0 in range(0, n_probes, settings.probe_block)
            for g0 in range(0, n_gallery, settings.gallery_block)]


def probe_range(P: np.ndarray, G: np.ndarray, mates: np.ndarray, groups: np.ndarray, p0: int, p1: int,
                settings: SearchSettings, n_groups: int) -> SearchPartial:
    """Probes [p0, p1) (quantized rows of P) against the whole gallery, merged over its blocks as they go, so at
    most one block of scores (probe_block x gallery_block float64) exists at a time. The unit of work that runs
    in-process or on a Dask worker (harness/search_cluster.py)."""
    acc = None
    scratch = _Scratch((p1 - p0) * min(settings.gallery_block, len(G)))
    for g0 in range(0, len(G), settings.gallery_block):
        floor = None if acc is None else acc.top_score[:, -1]
        part = score_block(P, mates, groups, p0, p1, G, g0, min(g0 + settings.gallery_block, len(G)), settings,
                           n_groups, floor, scratch)
        acc = part if acc is None else merge(acc, part, settings.k)
    return acc


def prepare(probes: np.ndarray, gallery: np.ndarray, mate_pos: Sequence[int], probe_group: Sequence[int]):
    """(quantized probes, quantized gallery, mate positions, probe group codes), checked."""
    P, G = quantize(probes), quantize(gallery)
    if P.ndim != 2 or G.ndim != 2 or P.shape[1] != G.shape[1]:
        raise InputError(f"search: probe shape {P.shape} and gallery shape {G.shape} do not match")
    return P, G, np.asarray(mate_pos, np.int64), np.asarray(probe_group, np.int64)


def search(probes: np.ndarray, gallery: np.ndarray, mate_pos: Sequence[int], probe_group: Sequence[int],
           n_groups: int, settings: SearchSettings) -> SearchPartial:
    """In-process blocked search of every probe against the whole gallery."""
    P, G, mates, groups = prepare(probes, gallery, mate_pos, probe_group)
    done = [probe_range(P, G, mates, groups, p0, min(p0 + settings.probe_block, len(P)), settings, n_groups)
            for p0 in range(0, len(P), settings.probe_block)] if len(G) else []
    return assemble(done, len(P), len(G), settings.k)


def mate_rank(result: SearchPartial) -> np.ndarray:
    """Per probe: the mate's rank among the candidates (1 = first), k + 1 when beyond the kept k or absent."""
    k = result.top_score.shape[1]
    ahead = (result.top_score >= result.mate_score[:, None]).sum(axis=1)
    rank = ahead + 1
    return np.where(np.isfinite(result.mate_score) & (rank <= k), rank, k + 1)
