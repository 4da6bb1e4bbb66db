"""The numpy block scorer harness/metrics/search.py had before the fused kernel (commit 74a45ce), kept only as the
slow reference the fused scorer must equal bit for bit (tests/unit/test_search_fused.py): float64 scores of the
quantized rows (`similarity`), then one numpy pass per statistic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.metrics.search import SearchPartial, SearchSettings, assemble, merge, prepare, similarity


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


def search(probes, gallery, mate_pos, probe_group, n_groups: int, settings: SearchSettings) -> SearchPartial:
    P, G, mates, groups = prepare(probes, gallery, mate_pos, probe_group)
    done = [probe_range(P, G, mates, groups, p0, min(p0 + settings.probe_block, len(P)), settings, n_groups)
            for p0 in range(0, len(P), settings.probe_block)] if len(G) else []
    return assemble(done, len(P), len(G), settings.k)
