"""The 1:N scorer's block reduction, one fused pass (numba): a float32 screen re-scored exactly near every decision.

`reduce_rows` reads each score of a block once and updates, per probe row, its top-k candidates, the mate's score,
the best non-mate score within each nested gallery prefix and the exceedance counts, and per probe group the
histogram of non-mate scores (harness/metrics/search.py says what each one is).

Scores come in float32 (BLAS sgemm of the quantized rows, which float32 holds exactly) with a per-row bound `eps`
on their distance from the exact float64 score: for a dot product of length d evaluated in float32 in any order,
with or without fused multiply-add,

    |fl(a.b) - a.b| <= gamma_d * sum_i |a_i b_i| <= gamma_d * ||a|| ||b||,  gamma_d = d u / (1 - d u), u = 2^-24

(Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., 2002, sec. 3.1, eq. 3.5; no underflow: every
product and sum of values on the 2^-20 grid is 0 or at least 2^-40 in magnitude, far above float32's 2^-126).
Every decision is a monotone function of the score (above a threshold, above the k-th best, above the prefix
maximum, which histogram bin), so where it takes the same value at both ends of [v - eps, v + eps] it is the exact
score's; where it does not, or where the score itself is kept (a candidate, a prefix maximum, the mate), the score
is recomputed exactly (`exact_dot`, float64 over the same rows; every partial sum is exact, search.py) and the
decision taken on that. The result is the exact scorer's, bit for bit. With eps = 0 the scores are taken as exact
(the float64 fallback: search.py passes float64 GEMM scores where the float32 screen does not apply).
"""

from __future__ import annotations

import numpy as np
from numba import njit

U32 = 2.0 ** -24  # float32 unit roundoff
EPS_PAD = 1.0 + 2.0 ** -20  # covers the float64 rounding of the bound and of v -+ eps (relative ~1e-15 each)


def screen_eps(d: int, row_norms: np.ndarray, other_norm_max: float) -> np.ndarray:
    """Per row, a rigorous bound on |float32 dot - exact dot| against any row of norm <= other_norm_max
    (Higham eq. 3.5, gamma_d * ||a|| ||b||), slightly padded."""
    du = d * U32
    if du >= 0.5:
        raise ValueError(f"screen_eps: dimension {d} too large for the float32 screen")
    gamma = du / (1.0 - du)
    return np.asarray(row_norms, np.float64) * (gamma * float(other_norm_max) * EPS_PAD)


# reassoc/contract: LLVM may reorder the sum (and vectorise it) and fuse multiply-adds. Safe here and only here:
# every product and partial sum of the grid rows is exact (search.MAX_NORM_PRODUCT), so any order, with or without
# FMA, gives the same value, the float64 GEMM's.
@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def exact_dot(P, i, G, j):
    """The exact dot product of rows P[i] and G[j] (quantized values, read as float64)."""
    acc = 0.0
    for q in range(P.shape[1]):
        acc += np.float64(P[i, q]) * np.float64(G[j, q])
    return acc


@njit(cache=True, nogil=True, inline="always")
def bin_of(s, half, last):
    """The histogram bin of score s, as the numpy scorer computed it: clip(s * half + half, 0, last), truncated
    (two roundings, in this order; monotone in s)."""
    y = s * half
    y = y + half
    if y < 0.0:
        y = 0.0
    if y > last:
        y = last
    return int(y)


@njit(cache=True, nogil=True, inline="always")
def insert(top_s, top_i, i, x, pos):
    """Put (x, pos) into row i's list (score descending, position ascending), x > its last score and pos above
    every position held: it goes after every held score >= x."""
    q = top_s.shape[1] - 1
    while q > 0 and top_s[i, q - 1] < x:
        top_s[i, q] = top_s[i, q - 1]
        top_i[i, q] = top_i[i, q - 1]
        q -= 1
    top_s[i, q] = x
    top_i[i, q] = pos


def bin_eps(eps: np.ndarray, score_bound: np.ndarray, bins: int) -> np.ndarray:
    """Per row, a bound on how far t = s * bins/2 + bins/2 (computed as `bin_of` does, two roundings) can move
    when s moves by at most eps (score_bound: a bound on |s|): eps * bins/2, plus the roundings of t at both
    ends, padded (each at most (|s| + 1) * bins/2 * 2^-52)."""
    half = bins / 2.0
    return eps * half * EPS_PAD + (np.asarray(score_bound, np.float64) + 2.0) * half * 2.0 ** -48


CHUNK = 1024  # columns whose bin bounds are computed at once (two int32 buffers that stay in L1)


@njit(cache=True, nogil=True)
def bin_bounds(S, i, c0, c1, half, last, eh, lo_b, hi_b):
    """Bins of the two ends of [t - eh, t + eh], t = S[i, c] * half + half, for columns c0..c1 (branch-free: the
    compiler vectorises it)."""
    for j in range(c1 - c0):
        y = np.float64(S[i, c0 + j]) * half
        y = y + half
        lo_b[j] = np.int32(min(max(y - eh, 0.0), last))
        hi_b[j] = np.int32(min(max(y + eh, 0.0), last))


@njit(cache=True, nogil=True)
def first_at_or_above(S, i, c, c1, gate_v):
    """The first column in c..c1 - 1 of row i scoring at least gate_v, or c1 (a tight scan of its own: inside
    the kernel's body the compiler does not keep this loop tight)."""
    while c < c1 and np.float64(S[i, c]) < gate_v:
        c += 1
    return c


@njit(cache=True, nogil=True)
def count_bins(lo_b, hi_b, n, h, near):
    """Count lo_b[:n] into h; list in `near` the j whose bounds differ (branch-free). Returns how many, and the
    largest of hi_b[:n]."""
    n_near = 0
    top = np.int32(0)
    for j in range(n):
        b = lo_b[j]
        h[b] += 1
        near[n_near] = j
        n_near += b != hi_b[j]
        top = max(top, hi_b[j])
    return n_near, top


@njit(cache=True, nogil=True)
def reduce_rows(S, P, G, g0, r0, r1, mates, groups, eps, beps, cuts, ends, bins, floor,
                top_s, top_i, mate_score, prefix, exceed, hist):
    """Rows r0..r1 of a block: S[i, c] scores probe row P[i] against gallery row G[c] (gallery position g0 + c),
    within eps[i] of the exact score (0: exact; beps[i]: `bin_eps`). Updates in place: top_s/top_i (n, k) running
    lists (a candidate needs score >= floor[i] and above the k-th held), mate_score (n,) max, prefix (n, J) max
    over columns < ends[j] (ends clipped to [0, m], non-decreasing), exceed (n, T) counts of scores >= cuts[t],
    hist (groups, bins) counts. The mate (mates[i] - g0) counts in mate_score only (its score in S is set to -inf).
    Returns how many exact re-scores it computed.

    Per row, two passes over its scores: the histogram (bin bounds for a chunk of columns, then one count each,
    re-scored where the bounds differ), then the decisions, taken in a scalar loop only by scores within eps of
    the row's current gate (the lowest of the k-th best held, the floor, the lowest cut-off and the open prefix's
    maximum): most scores are far below it and cost one comparison."""
    m = S.shape[1]
    k = top_s.shape[1]
    n_cut = cuts.shape[0]
    n_end = ends.shape[0]
    tmin = np.inf
    for q in range(n_cut):
        tmin = min(tmin, cuts[q])
    half = bins / 2.0
    last = bins - 1.0
    lo_b = np.empty(CHUNK, np.int32)
    hi_b = np.empty(CHUNK, np.int32)
    near = np.empty(CHUNK, np.int64)
    rescored = 0
    for i in range(r0, r1):
        e = eps[i]
        eh = beps[i]
        exact_in = e == 0.0
        h = hist[groups[i]]
        mate = mates[i] - g0
        if mate >= 0 and mate < m:
            x = np.float64(S[i, mate]) if exact_in else exact_dot(P, i, G, mate)
            if x > mate_score[i]:
                mate_score[i] = x
            S[i, mate] = -np.inf  # lands in bin 0, taken out here, and is below every other decision
            h[0] -= 1
        # the histogram
        hi_bin = 0  # the highest upper-end bin of the row: no score reaches a gate in a higher bin
        for c0 in range(0, m, CHUNK):
            c1 = min(c0 + CHUNK, m)
            bin_bounds(S, i, c0, c1, half, last, eh, lo_b, hi_b)
            n_near, top = count_bins(lo_b, hi_b, c1 - c0, h, near)
            hi_bin = max(hi_bin, top)
            for q in range(n_near):  # those: the exact score's bin instead
                j = near[q]
                h[lo_b[j]] -= 1
                h[bin_of(exact_dot(P, i, G, c0 + j), half, last)] += 1
            rescored += n_near
        # the decisions
        fl = floor[i]
        kth = top_s[i, k - 1]
        gate_top = max(fl, kth)
        je = 0
        while je < n_end and ends[je] <= 0:
            je += 1
        # the held maximum of the first open prefix (-inf in a fresh partial) is at most every later one's: nested
        best = prefix[i, je] if je < n_end else -np.inf
        # the gate only rises along the row; v + e >= gate puts v's upper-end bin at or above the gate's (both
        # monotone), so a row whose highest upper-end bin is below the gate's has no score to look at
        gate = min(gate_top, tmin)
        if je < n_end:
            gate = min(gate, best)
        scan = hi_bin >= bin_of(gate, half, last)
        c0 = 0
        while c0 < m:  # segments between prefix ends: the prefixes open in one are the same throughout
            c1 = ends[je] if je < n_end else m
            gate = min(gate_top, tmin)
            if je < n_end:
                gate = min(gate, best)
            gate_v = gate - e  # v + e >= gate, as v >= gate - e (padded eps absorbs the rounding)
            c = c0 if scan else c1
            while True:
                c = first_at_or_above(S, i, c, c1, gate_v)
                if c >= c1:
                    break
                v = np.float64(S[i, c])
                # near or above a decision boundary: top-k, exceedances, prefix maximum
                x = v
                have = exact_in
                lo = v - e
                hi = v + e
                if hi >= fl and hi > kth:
                    if not have:
                        x = exact_dot(P, i, G, c)
                        have = True
                        rescored += 1
                        lo = x
                        hi = x
                    if x >= fl and x > kth:
                        insert(top_s, top_i, i, x, g0 + c)
                        kth = top_s[i, k - 1]
                        gate_top = max(fl, kth)
                if hi >= tmin:
                    for q in range(n_cut):
                        if lo >= cuts[q]:
                            exceed[i, q] += 1
                        elif hi >= cuts[q]:
                            if not have:
                                x = exact_dot(P, i, G, c)
                                have = True
                                rescored += 1
                                lo = x
                                hi = x
                            if x >= cuts[q]:
                                exceed[i, q] += 1
                if je < n_end and hi > best:
                    if not have:
                        x = exact_dot(P, i, G, c)
                        have = True
                        rescored += 1
                        lo = x
                        hi = x
                    if x > best:
                        best = x
                gate = min(gate_top, tmin)
                if je < n_end:
                    gate = min(gate, best)
                gate_v = gate - e
                c += 1
            while je < n_end and ends[je] == c1:  # prefixes ending here
                if best > prefix[i, je]:
                    prefix[i, je] = best
                je += 1
            c0 = c1
    return rescored


@njit(cache=True, nogil=True)
def top_k_rows(s, g0, top_s, top_i):
    """Per row of scores s (gallery positions g0..), merge its entries into the running lists top_s/top_i by the
    scorer's rule (score descending, position ascending; an entry needs a score above the k-th held, so -inf and
    NaN never enter)."""
    k = top_s.shape[1]
    for i in range(s.shape[0]):
        kth = top_s[i, k - 1]
        for c in range(s.shape[1]):
            x = np.float64(s[i, c])
            if x > kth:
                insert(top_s, top_i, i, x, g0 + c)
                kth = top_s[i, k - 1]

