"""The fused scorer (float32 screen, exact re-score: harness/metrics/search_kernel.py) equals the numpy float64
scorer it replaced (tests/unit/search_reference.py), bit for bit, on data built to sit on its decision boundaries."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

import search_reference as ref
from harness.metrics import search as fused
from harness.metrics.search import (SearchSettings, assemble, block_top_k, blocks, quantize, score_block, search)


def unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def tie_rows(rng, n, d, sign, a_step=0.25, da=4):
    """Rows [a, w, sign * w]: a has `da` components, multiples of a_step in [-1/2, 1/2]; w is random on the grid.
    A probe row (sign +1) and a gallery row (sign -1) score exactly a . a' (the w parts cancel: w.w' - w.w'), so
    scores are few exact values (ties everywhere, bin edges and cut-offs hit exactly), while float32 sums of the
    w parts leave a rounding residue: the float32 screen is off by up to ~1e-7 on every score."""
    half = (d - da) // 2
    a = rng.integers(-int(0.5 / a_step), int(0.5 / a_step) + 1, (n, da)) * a_step
    w = quantize(rng.standard_normal((n, half)) * np.sqrt(0.3 / half))
    return np.hstack([a, w, sign * w, np.zeros((n, d - da - 2 * half))])


def float32_noise(P, G) -> float:
    """Largest |float32 GEMM - exact| over the matrix (the screen's actual error)."""
    Pq, Gq = quantize(P), quantize(G)
    return float(np.abs((Pq.astype(np.float32) @ Gq.astype(np.float32).T).astype(np.float64) - Pq @ Gq.T).max())


def settings(**kw) -> SearchSettings:
    base = dict(k=10, thresholds=(0.0, 0.25, 0.5), sizes=(7, 100, 1000), bins=2000, probe_block=128,
                gallery_block=256)
    base.update(kw)
    return SearchSettings(**base)


def check(P, G, mates, groups, n_groups, st):
    new, old = search(P, G, mates, groups, n_groups, st), ref.search(P, G, mates, groups, n_groups, st)
    for f in ("top_score", "top_index", "mate_score", "prefix_max", "exceed", "hist"):
        assert np.array_equal(getattr(new, f), getattr(old, f)), f
    assert new.equals(old)
    return new


@pytest.mark.parametrize("d", [128, 192, 512])
@pytest.mark.parametrize("bins", [2000, 2048])
def test_exact_ties_on_edges_and_cut_offs(d, bins):
    """Scores are multiples of 1/16 (bins=2000: every other one on a bin edge; 2048: all on edges; the cut-offs
    0, 0.25 and 0.5 hit exactly), read through a float32 screen that is wrong in the last bits of nearly all."""
    rng = np.random.default_rng(d + bins)
    P, G = tie_rows(rng, 300, d, 1), tie_rows(rng, 700, d, -1)
    assert float32_noise(P, G) > 0  # the screen really is inexact here
    mates = rng.integers(-1, 700, 300)
    groups = rng.integers(0, 3, 300)
    res = check(P, G, mates, groups, 3, settings(bins=bins))
    assert len(np.unique(res.top_score[np.isfinite(res.top_score)])) <= 17  # many ties among the candidates


def test_random_unit_rows_many_block_shapes():
    rng = np.random.default_rng(1)
    P, G = unit(rng, 200, 192), unit(rng, 900, 192)
    G[17] = G[600]            # exact ties across blocks
    P[3] = G[17]
    mates = rng.integers(-1, 900, 200)
    groups = rng.integers(0, 4, 200)
    for pb, gb in [(200, 900), (1, 900), (64, 1), (33, 100), (128, 256), (7, 899)]:
        check(P, G, mates, groups, 4, settings(probe_block=pb, gallery_block=gb,
                                              thresholds=(-1.0, 0.1, 0.2), sizes=(1, 50, 899, 900)))


def test_any_partition_and_order_equals_the_reference():
    rng = np.random.default_rng(2)
    P, G = tie_rows(rng, 90, 128, 1), tie_rows(rng, 301, 128, -1)
    mates, groups = rng.integers(-1, 301, 90), rng.integers(0, 3, 90)
    st = settings(k=6, sizes=(10, 100, 301), bins=50)
    want = ref.search(P, G, mates, groups, 3, st)
    Pq, Gq = quantize(P), quantize(G)
    rnd = random.Random(3)
    for pb, gb in [(1, 301), (90, 1), (7, 13), (33, 100), (64, 256)]:
        st2 = dataclasses.replace(st, probe_block=pb, gallery_block=gb)
        parts = [score_block(Pq, mates, groups, p0, p1, Gq, g0, g1, st2, 3) for p0, p1, g0, g1 in blocks(90, 301, st2)]
        old = [ref.score_block(Pq, mates, groups, p0, p1, Gq, g0, g1, st2, 3)
               for p0, p1, g0, g1 in blocks(90, 301, st2)]
        assert all(a.equals(b) for a, b in zip(parts, old)), (pb, gb)  # each block's partial too
        rnd.shuffle(parts)
        assert assemble(parts, 90, 301, st.k).equals(want), (pb, gb)


def test_score_block_with_a_floor_equals_the_reference():
    rng = np.random.default_rng(4)
    P, G = tie_rows(rng, 40, 192, 1), tie_rows(rng, 200, 192, -1)
    mates, groups = rng.integers(-1, 200, 40), np.zeros(40, np.int64)
    st = settings(k=5)
    Pq, Gq = quantize(P), quantize(G)
    floor = np.where(np.arange(40) % 3 == 0, -np.inf, np.round(rng.uniform(-0.25, 0.5, 40) * 16) / 16)
    new = score_block(Pq, mates, groups, 0, 40, Gq, 50, 200, st, 1, floor=floor)
    old = ref.score_block(Pq, mates, groups, 0, 40, Gq, 50, 200, st, 1, floor=floor)
    assert new.equals(old)


def test_k_beyond_the_gallery_a_gallery_below_one_block_and_no_mates():
    rng = np.random.default_rng(5)
    P, G = tie_rows(rng, 70, 192, 1), tie_rows(rng, 12, 192, -1)
    groups = rng.integers(0, 2, 70)
    res = check(P, G, np.full(70, -1), groups, 2, settings(k=30, sizes=(5, 12, 40), gallery_block=4096))
    assert (res.top_index[:, 12:] == -1).all() and np.isneginf(res.mate_score).all()
    check(P, G, rng.integers(-1, 12, 70), groups, 2, settings(k=13, gallery_block=5))


def test_rows_the_float32_screen_cannot_hold_fall_back_to_float64():
    """A component float32 cannot hold (17 + 2^-20 needs 25 bits), or norms whose product reaches
    MAX_NORM_PRODUCT: that probe range is scored in float64, with the same result as the reference."""
    rng = np.random.default_rng(6)
    P, G = unit(rng, 50, 128), unit(rng, 300, 128)
    mates, groups = rng.integers(-1, 300, 50), rng.integers(0, 2, 50)
    st = settings(probe_block=25)
    wide = P.copy()
    wide[30, 0] = 17 + 2.0 ** -20
    big_p, big_g = P * 70, G * 70  # ||p|| ||g|| = 4900 > 2^12
    for Pc, Gc in [(wide, G), (big_p, big_g)]:
        Pq, Gq = quantize(Pc), quantize(Gc)
        rng_ = fused._Range(Pq, Gq, mates, groups, 25, 50, st, 2)
        assert not rng_.screened
        check(Pc, Gc, mates, groups, 2, dataclasses.replace(st, thresholds=(0.0, 10.0), bins=64))
    assert fused._Range(quantize(P), quantize(G), mates, groups, 0, 25, st, 2).screened


def test_the_screen_needs_its_error_bound(monkeypatch):
    """With the bound set to 0 the float32 scores are taken as exact and the result differs from the exact
    scorer's (a cut-off hit exactly, tied candidates, bin edges): the exact re-score is what keeps it equal."""
    rng = np.random.default_rng(7)
    P, G = tie_rows(rng, 100, 192, 1), tie_rows(rng, 400, 192, -1)
    mates, groups = rng.integers(-1, 400, 100), rng.integers(0, 2, 100)
    st = settings(bins=2048)
    want = ref.search(P, G, mates, groups, 2, st)
    assert search(P, G, mates, groups, 2, st).equals(want)
    monkeypatch.setattr("harness.metrics.search_kernel.screen_eps", lambda d, norms, other: np.zeros(len(norms)))
    monkeypatch.setattr("harness.metrics.search_kernel.bin_eps", lambda eps, bound, bins: np.zeros(len(eps)))
    wrong = search(P, G, mates, groups, 2, st)
    assert not wrong.equals(want)
    assert not np.array_equal(wrong.exceed, want.exceed) and not np.array_equal(wrong.hist, want.hist)


def test_threads_and_column_tiles_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(8)
    P, G = tie_rows(rng, 257, 128, 1), tie_rows(rng, 500, 128, -1)
    mates, groups = rng.integers(-1, 500, 257), rng.integers(0, 5, 257)
    st = settings(probe_block=257, gallery_block=128)
    want = ref.search(P, G, mates, groups, 5, st)
    for threads, min_rows, tile in [(1, 64, 1024), (2, 64, 1024), (3, 1, 7), (8, 16, 50), (1, 64, 33)]:
        monkeypatch.setattr(fused, "_threads", lambda t=threads: t)
        monkeypatch.setattr(fused, "MIN_ROWS_PER_THREAD", min_rows)
        monkeypatch.setattr(fused, "TILE_COLUMNS", tile)  # several tiles per gallery block
        assert len(fused._slices(257)) == min(threads, 257 // min_rows)
        assert search(P, G, mates, groups, 5, st).equals(want), threads


def test_block_top_k_equals_the_reference():
    rng = np.random.default_rng(9)
    s = np.round(rng.standard_normal((30, 200)) * 4) / 4  # ties
    s[3, :] = -np.inf
    s[4, 10:] = -np.inf
    s[5, 7] = np.inf
    for k in (1, 5, 12, 250):
        new = block_top_k(s, 1000, k)
        old = ref._block_top_k(s.copy(), np.empty(s.shape, bool), 1000, k, None)
        assert np.array_equal(new[0], old[0]) and np.array_equal(new[1], old[1]), k


def test_non_finite_rows_and_unknown_groups_are_refused():
    """The kernel indexes its histogram by group code and bins finite scores: both are checked before it runs."""
    from harness.errors import InputError

    rng = np.random.default_rng(10)
    P, G = unit(rng, 5, 16), unit(rng, 9, 16)
    with pytest.raises(InputError, match="group codes must be in 0..1"):
        search(P, G, np.full(5, -1), np.array([0, 1, 2, 0, 0]), 2, settings())
    with pytest.raises(InputError, match="group codes"):
        search(P, G, np.full(5, -1), np.array([0, -1, 0, 0, 0]), 2, settings())
    G[2, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        search(P, G, np.full(5, -1), np.zeros(5, int), 1, settings())
