"""Verification counts from mergeable partials (issue 18): any partition or order of the pairs gives the same
threshold and rows as per-pair scoring, and the counts are the brute-force ones."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from scipy import sparse

from harness.metrics import pair_scores, per_group_error_rates, threshold_at_fmr
from harness.metrics.search import unit_grid
from harness.metrics.verification import VerificationCounts, _repeated_sum, verification_counts
from harness.metrics.verification_partials import BIN_SCALE, ImpostorHistogram, PairCounts, merge_all, score_bin

FIXED = (0.2, 0.6)


def labelled_set(seed: int, n_subjects: int = 30, dims: int = 12):
    """Subjects with 1 to 6 images (some with no genuine pair), clustered so both genuine misses and impostor
    exceedances occur, in 3 groups."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_subjects, dims))
    subj = np.repeat(np.arange(n_subjects), rng.integers(1, 7, n_subjects))
    emb = centres[subj] * 1.5 + rng.standard_normal((subj.size, dims))
    return emb, np.array([f"s{s:02d}" for s in subj]), np.array([f"g{s % 3}" for s in subj])


def all_pairs(emb, subjects, labels):
    """Every unordered pair of rows: (exact grid score, subject index of each side), by brute force."""
    g = unit_grid(emb)
    s_idx = np.searchsorted(labels.subjects, subjects)
    i, j = np.array(list(combinations(range(len(subjects)), 2))).T
    return np.einsum("ij,ij->i", g[i], g[j]), s_idx[i], s_idx[j]


def partitioned(labels, scores, a, b, rng, target_fmr):
    """Pairs shuffled, cut into random blocks, each reduced alone, partials merged in a shuffled order."""
    order = rng.permutation(scores.size)
    scores, a, b = scores[order], a[order], b[order]
    cuts = np.sort(rng.choice(np.arange(1, scores.size), size=rng.integers(3, 40), replace=False))
    blocks = list(zip(np.split(scores, cuts), np.split(a, cuts), np.split(b, cuts)))
    hists = [ImpostorHistogram.of(*blk) for blk in blocks]
    hist = merge_all([hists[k] for k in rng.permutation(len(hists))], ImpostorHistogram.combine, every=5)
    bin_, rank, _ = hist.locate(target_fmr)
    parts = [PairCounts.of(labels, *blk, FIXED, bin_) for blk in blocks]
    counted = PairCounts.combine([parts[k] for k in rng.permutation(len(parts))])
    tuned = counted.tuned_threshold(rank)
    at = {t: counted.at(j) for j, t in enumerate(FIXED)}
    at[tuned] = counted.resolve(tuned)
    return VerificationCounts(labels, tuned, target_fmr, at)


@pytest.mark.parametrize("target_fmr", [1e-3, 0.05, 0.3])
def test_any_partition_and_order_of_the_pairs_gives_the_same_threshold_and_rows(target_fmr):
    emb, subjects, groups = labelled_set(1)
    scores = pair_scores(emb, subjects, groups)
    t = threshold_at_fmr(scores, target_fmr)
    want = per_group_error_rates(scores, threshold=t, fixed_thresholds=FIXED, target_fmr=target_fmr, n_boot=200)
    assert any(r["k"] for r in want if r["metric"] == "fnmr") and any(r["k"] for r in want if r["metric"] == "fmr")
    s, a, b = all_pairs(emb, subjects, scores.labels)
    rng = np.random.default_rng(5)
    for _ in range(3):
        counted = partitioned(scores.labels, s, a, b, rng, target_fmr)
        assert counted.tuned == t
        assert per_group_error_rates(counted, threshold=t, fixed_thresholds=FIXED, target_fmr=target_fmr,
                                     n_boot=200) == want


def test_blocked_scorer_equals_per_pair_scoring_for_any_block_size_and_row_order():
    emb, subjects, groups = labelled_set(2)
    scores = pair_scores(emb, subjects, groups, group_by="g")
    t = threshold_at_fmr(scores, 0.01)
    want = per_group_error_rates(scores, threshold=t, fixed_thresholds=FIXED, target_fmr=0.01, n_boot=100)
    perm = np.random.default_rng(0).permutation(len(subjects))
    for block_rows, order in ((1, perm), (5, perm[::-1]), (4096, np.arange(len(subjects)))):
        vc = verification_counts(emb[order], subjects[order], groups[order], group_by="g", target_fmr=0.01,
                                 thresholds=FIXED, block_rows=block_rows)
        assert vc.tuned == t and vc.n_impostor == scores.n_impostor and vc.n_genuine == scores.genuine.size
        assert per_group_error_rates(vc, threshold=t, fixed_thresholds=FIXED, target_fmr=0.01, n_boot=100) == want
        assert threshold_at_fmr(vc, 0.01) == t
    # a given threshold (a variant inheriting the reference's): no tuning pass, the same rows at it
    given = verification_counts(emb, subjects, groups, group_by="g", thresholds=(t, *FIXED))
    assert given.tuned is None
    assert per_group_error_rates(given, threshold=t, fixed_thresholds=FIXED, target_fmr=0.01, n_boot=100) == want
    with pytest.raises(ValueError, match="no counts at threshold 0.5"):
        per_group_error_rates(given, threshold=0.5)


def test_counts_equal_brute_force_including_scores_equal_to_the_threshold():
    emb, subjects, groups = labelled_set(3, n_subjects=12)
    labels = pair_scores(emb, subjects, groups).labels
    s, a, b = all_pairs(emb, subjects, labels)
    imp = a != b
    target = 0.1
    k = int(np.floor(target * imp.sum()))
    brute_t = float(np.sort(s[imp])[::-1][k])
    counted = partitioned(labels, s, a, b, np.random.default_rng(1), target)
    assert counted.tuned == brute_t == threshold_at_fmr(s[imp], target)
    for t in (brute_t, *FIXED, float(s[imp].max())):  # the tuned one and the largest impostor are scores themselves
        ex = counted.at[t] if t in counted.at else PairCounts.of(labels, s, a, b, [t]).at(0)
        gen = ~imp
        assert ex.misses.tolist() == np.bincount(a[gen & (s <= t)], minlength=labels.n_subjects).tolist()
        lo, hi = np.minimum(a, b), np.maximum(a, b)  # one group order here is not subject order: count unordered
        want = {}
        for x, y in zip(lo[imp & (s > t)], hi[imp & (s > t)]):
            want[(int(x), int(y))] = want.get((int(x), int(y)), 0) + 1
        got_a, got_b = np.divmod(ex.codes, labels.n_subjects)
        got = {(int(min(x, y)), int(max(x, y))): int(n) for x, y, n in zip(got_a, got_b, ex.counts)}
        assert got == want
        # oriented: the lower (group, subject) first
        ga, gb = labels.subject_group[got_a], labels.subject_group[got_b]
        assert np.all((ga < gb) | ((ga == gb) & (got_a < got_b)))


def test_histogram_bins_merge_and_locate():
    s = np.array([0.5, 0.5 + 1 / BIN_SCALE, 0.5 + 0.4 / BIN_SCALE, -0.25, 0.9])
    assert score_bin(s).tolist() == [524288, 524289, 524288, -262144, 943718]
    one = ImpostorHistogram.of_impostors(s)
    two = ImpostorHistogram.of_impostors(s[:2]).merge(ImpostorHistogram.of_impostors(s[2:]))
    assert (one.bins.tolist(), one.counts.tolist()) == (two.bins.tolist(), two.counts.tolist()) and one.n == 5
    assert one.bins.tolist() == [-262144, 524288, 524289, 943718] and one.counts.tolist() == [1, 2, 1, 1]
    # k = floor(0.4 * 5) = 2: the 3rd largest (0.5 + 0.4 * 2^-20) is the larger of bin 524288's two, rank 0
    assert one.locate(0.4) == (524288, 0, 2)
    assert one.locate(0.6) == (524288, 1, 3)  # k = 3: the 4th largest, 0.5, the smaller of that bin
    assert ImpostorHistogram().merge(one).counts.tolist() == one.counts.tolist()
    assert merge_all([], ImpostorHistogram.combine) is None


def test_repeated_sum_is_the_sparse_matrix_sum_of_duplicates_bit_for_bit():
    rng = np.random.default_rng(0)
    m = rng.integers(1, 60, (500, 2)).astype(float)
    x = 1.0 / (m[:, 0] * m[:, 1])
    c = rng.integers(1, 400, 500)
    rows = np.repeat(np.arange(500), c)
    summed = sparse.csr_matrix((np.repeat(x, c), (rows, np.zeros_like(rows))), shape=(500, 1)).toarray()[:, 0]
    got = _repeated_sum(x, c)
    assert np.array_equal(got, summed)
    assert not np.array_equal(got, c * x)  # the plain product differs in last bits: the sum is what rows had


def test_no_impostor_or_no_genuine_pair_gives_the_per_pair_rows():
    emb, subjects, groups = labelled_set(4, n_subjects=6)
    one = subjects == subjects[0]  # one subject: genuine pairs only, nothing to tune a threshold on
    vc = verification_counts(emb[one], subjects[one], groups[one], target_fmr=1e-3, thresholds=(0.9,))
    assert vc.tuned is None and vc.n_impostor == 0
    assert per_group_error_rates(vc, threshold=None, fixed_thresholds=(0.9,), n_boot=20) == per_group_error_rates(
        pair_scores(emb[one], subjects[one], groups[one]), threshold=None, fixed_thresholds=(0.9,), n_boot=20)
    first = np.unique(subjects, return_index=True)[1]  # one image a subject: impostor pairs only
    vc = verification_counts(emb[first], subjects[first], groups[first], target_fmr=0.1, thresholds=(0.9,))
    ps = pair_scores(emb[first], subjects[first], groups[first])
    assert vc.n_genuine == 0 and vc.tuned == threshold_at_fmr(ps, 0.1)
    assert per_group_error_rates(vc, threshold=vc.tuned, fixed_thresholds=(0.9,), n_boot=20) == per_group_error_rates(
        ps, threshold=vc.tuned, fixed_thresholds=(0.9,), n_boot=20)
