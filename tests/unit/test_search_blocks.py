"""The blocked 1:N scorer: exact scores, and the same rows for any block partition and merge order."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from harness.metrics.search import (SearchSettings, assemble, blocks, mate_rank, quantize, score_block, search)


def unit(rng, n, d=32):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def case():
    rng = np.random.default_rng(7)
    P, G = unit(rng, 90), unit(rng, 301)
    G[11] = G[250]  # an exact tie between two gallery positions
    P[0] = G[11]    # ... both best candidates of probe 0
    mates = rng.integers(-1, 301, 90)
    mates[0] = -1
    groups = rng.integers(0, 3, 90)
    settings = SearchSettings(k=6, thresholds=(0.0, 0.2, 0.4), sizes=(10, 100, 301), bins=50, probe_block=90,
                              gallery_block=301)
    return P, G, mates, groups, settings


def brute(P, G, mates, k):
    s = quantize(P) @ quantize(G).T
    mate = np.array([s[i, m] if m >= 0 else -np.inf for i, m in enumerate(mates)])
    for i, m in enumerate(mates):
        if m >= 0:
            s[i, m] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(G.shape[0]), s.shape), -s), axis=1)[:, :k]
    return s, mate, order


def test_matches_brute_force(case):
    P, G, mates, groups, st = case
    res = search(P, G, mates, groups, 3, st)
    s, mate, order = brute(P, G, mates, st.k)
    assert np.array_equal(res.top_index, order)
    assert np.array_equal(res.top_score, np.take_along_axis(s, order, axis=1))
    assert np.array_equal(res.mate_score, mate)
    assert np.array_equal(res.exceed[:, 1], (s >= 0.2).sum(axis=1))
    assert np.array_equal(res.prefix_max[:, 0], s[:, :10].max(axis=1))
    assert res.hist.sum() == np.isfinite(s).sum()
    # the tie: both copies lead probe 0's list, the lower position first
    assert list(res.top_index[0, :2]) == [11, 250]


def test_any_partition_and_order_gives_identical_rows(case):
    P, G, mates, groups, st = case
    ref = search(P, G, mates, groups, 3, st)
    Pq, Gq = quantize(P), quantize(G)
    rnd = random.Random(3)
    for pb, gb in [(1, 301), (90, 1), (7, 13), (33, 100), (64, 256)]:
        st2 = dataclasses.replace(st, probe_block=pb, gallery_block=gb)
        parts = [score_block(Pq, mates, groups, p0, p1, Gq, g0, g1, st2, 3) for p0, p1, g0, g1 in blocks(90, 301, st2)]
        rnd.shuffle(parts)
        assert assemble(parts, 90, 301, st.k).equals(ref), (pb, gb)


def test_grid_scores_do_not_depend_on_the_block_shape():
    """Scores on the 2^-20 grid in float64 are the same whatever the GEMM's block shape (float32 GEMM output is not
    on every BLAS, so it is not used), and the grid moves no component by more than 2^-21."""
    rng = np.random.default_rng(0)
    P, G = unit(rng, 200, 192).astype(np.float32), unit(rng, 500, 192).astype(np.float32)
    Pq, Gq = quantize(P), quantize(G)
    full = Pq @ Gq.T
    for pb in (1, 7, 64):
        blocked = np.concatenate([Pq[i:i + pb] @ Gq.T for i in range(0, 200, pb)])
        assert np.array_equal(blocked, full)
    assert np.max(np.abs(Pq - P)) <= 2.0 ** -21


def test_memory_does_not_grow_with_the_gallery(case):
    P, G, mates, groups, st = case
    small = search(P, G[:50], np.where(mates < 50, mates, -1), groups, 3, dataclasses.replace(st, sizes=(50,)))
    big = search(P, G, mates, groups, 3, dataclasses.replace(st, sizes=(50,)))
    for f in ("top_score", "top_index", "mate_score", "prefix_max", "exceed", "hist"):
        assert getattr(small, f).shape == getattr(big, f).shape


def test_mate_rank(case):
    P, G, mates, groups, st = case
    res = search(P, G, mates, groups, 3, st)
    s, mate, _ = brute(P, G, mates, st.k)
    expect = np.where(np.isfinite(mate), (s >= mate[:, None]).sum(axis=1) + 1, st.k + 1)
    expect = np.where(expect > st.k, st.k + 1, expect)
    assert np.array_equal(mate_rank(res), expect)


def test_incomplete_partials_are_refused(case):
    P, G, mates, groups, st = case
    Pq, Gq = quantize(P), quantize(G)
    part = score_block(Pq, mates, groups, 0, 90, Gq, 0, 100, st, 3)
    with pytest.raises(ValueError, match="cover 100 of 301"):
        assemble([part], 90, 301, st.k)


def test_in_process_search_with_many_gallery_blocks_equals_one_block(case):
    """search() passes each probe's held k-th best score on as a floor; that must not change the result."""
    P, G, mates, groups, st = case
    ref = search(P, G, mates, groups, 3, st)
    for gb in (1, 7, 50, 150):
        assert search(P, G, mates, groups, 3, dataclasses.replace(st, probe_block=16, gallery_block=gb)).equals(ref)


def test_ties_at_the_kth_score_break_by_position_for_every_block_shape():
    """Unit templates with four components of +-1/2 score only multiples of 1/4, so the k-th best of every probe is
    tied with many others across block boundaries: the kept candidates are the lowest positions among the ties,
    whatever the blocks, and each block's own lower bound (the smallest of k column-chunk maxima) keeps them all."""
    rng = np.random.default_rng(11)

    def sparse_unit(n):
        x = np.zeros((n, 16))
        for row in x:
            row[rng.choice(16, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
        return x

    P, G = sparse_unit(40), sparse_unit(500)
    mates = rng.integers(-1, 500, 40)
    groups = rng.integers(0, 2, 40)
    s, mate, order = brute(P, G, mates, 10)
    assert len(np.unique(s[np.isfinite(s)])) <= 9  # many ties
    for pb, gb in [(40, 500), (7, 33), (40, 11), (3, 128)]:
        st = SearchSettings(k=10, thresholds=(0.0, 0.5), sizes=(50, 500), bins=40, probe_block=pb, gallery_block=gb)
        res = search(P, G, mates, groups, 2, st)
        assert np.array_equal(res.top_index, order), (pb, gb)
        assert np.array_equal(res.top_score, np.take_along_axis(s, order, axis=1))
        assert np.array_equal(res.exceed[:, 0], (s >= 0.0).sum(axis=1))
        assert np.array_equal(res.mate_score, mate)


def test_a_low_cut_off_counts_the_same_as_a_high_one():
    """Exceedances come from one mask at the lowest threshold, or per threshold over the block when that mask is
    most of the block (a cut-off of -1 counts every non-mate template)."""
    rng = np.random.default_rng(2)
    P, G = unit(rng, 30), unit(rng, 200)
    mates = rng.integers(-1, 200, 30)
    s, _, _ = brute(P, G, mates, 5)
    for cuts in [(-1.0, 0.9), (0.3, 0.9), (0.95,)]:
        res = search(P, G, mates, np.zeros(30, int), 1, SearchSettings(k=5, thresholds=cuts, gallery_block=64))
        for j, t in enumerate(cuts):
            assert np.array_equal(res.exceed[:, j], (s >= t).sum(axis=1)), (cuts, t)
