"""Verification error rates by demographic group, after the NIST FRVT/FRTE demographic-effects protocol, with
every subject (not every comparison) counting once.

Every pair of embeddings is compared by cosine similarity: pairs of one subject are genuine, pairs of two
subjects are impostors. A pair is declared a match when its score is strictly above the threshold.
Per group (Grother, Ngan, Hanaoka 2019, NISTIR 8280 "Face Recognition Vendor Test Part 3: Demographic Effects"):
FNMR over the genuine pairs of the group's subjects; FMR over same-group impostor pairs (both subjects in the
group), since impostors of one's own demographic are the ones that drive false matches; the cross-group FMR
matrix covers every pair of groups.

Weighting (docs/metrics.md, "Subject-weighted rates"): a subject with 236 images has 27,730 genuine pairs and one
with 2 images has 1, so pooled pair counts make a group's FNMR that one person's. The rates reported here
average per unit instead: FNMR_g is the mean over the group's subjects of each subject's own FNMR; FMR_g the mean
over the group's unordered subject pairs of that pair's share of image pairs above the threshold. The test
subject is the statistical unit (ISO/IEC 19795-1:2021 on reducing bias from the analytic procedure; Schuckers
2010, "Computational Methods in Biometric Authentication", ch. 2-3, comparisons of one individual are
correlated). Raw pair counts (n, k) stay in every row. Intervals resample subjects (the "subsets bootstrap" of
Bolle, Ratha & Pankanti 2004, CVIU 93:1-33) and are computed for the same weighted estimator; a rate with no
error at all gets the one-sided Clopper-Pearson bound over its subjects instead of a collapsed [0, 0], and no
subject-level interval is narrower than that bound (one subject holding every error cannot make it so).

Scores come from the 1:N search's scorer (harness.metrics.search: `quantize` then `similarity`): unit rows put on
its 2^-20 grid and multiplied in float64, where every dot product is exact, so verification and identification
read the same score for the same two embeddings, and no block shape, row order, thread count or BLAS changes one.

Scale: 10,000 embeddings give ~50 million impostor pairs. Scores are computed in tiles by matrix products
(_pair_blocks) and every count comes from mergeable partials (harness.metrics.verification_partials, issue 18):
pass 1 an impostor histogram per 2^-20 bin locates the FMR-tuned threshold, pass 2 counts per subject its genuine
misses and per subject pair its impostor exceedances at every threshold, so any partition or order of the pairs
gives the same rows. `verification_counts` keeps nothing else (memory bounded by a tile, not the number of
pairs; what scoring uses). `pair_scores` keeps every pair's exact float64 score with its subject-pair code (one
int32 a pair while subjects^2 < 2^31) for what reads single pairs (DET curves, paired rates and flips, the
cross-ISA table); per_group_error_rates reduces its arrays by the same partials, so both give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from harness.errors import InputError
from harness.metrics.bootstrap import percentile_ci, resample_counts
from harness.metrics.inputs import (
    ALL, BAD_EMBEDDING_ROW, BAD_TARGET_FMR, NO_IMPOSTORS, SUBJECT_IN_TWO_GROUPS, as_2d_float, check_confidence,
    same_length,
)
from harness.metrics.rates import subject_interval_floor, wilson_interval, zero_count_interval
from harness.metrics.search import similarity, unit_grid
from harness.metrics.verification_partials import (
    Exceedances, ImpostorHistogram, Labels, PairCounts, merge_all, nth_largest, score_bin,
)

PAIR_SEP = "|"  # names a cross-group cell: "female|male"


@dataclass(frozen=True, eq=False)
class PairScores:
    """All genuine and impostor cosine scores of one embeddings matrix (the search scorer's exact grid scores,
    float64), indexed by group.

    groups: sorted group names; subjects: sorted subject labels; subject_group[s]: group index of subject s;
    subject_images[s]: rows (images) of subject s; genuine / genuine_subject: one score and subject index per
    genuine pair; impostor[(gi, gj)] (gi <= gj): impostor scores between groups gi and gj (in no particular
    order); impostor_pairs[(gi, gj)]: the subject pair of each of those scores, in the same order, coded
    a * S + b (S subjects; int32 while S * S fits, else int64).
    """

    group_by: str
    groups: tuple[str, ...]
    subjects: np.ndarray
    subject_group: np.ndarray
    subject_images: np.ndarray
    genuine: np.ndarray
    genuine_subject: np.ndarray
    impostor: dict[tuple[int, int], np.ndarray]
    impostor_pairs: dict[tuple[int, int], np.ndarray]

    @property
    def n_impostor(self) -> int:
        return int(sum(a.size for a in self.impostor.values()))

    @property
    def labels(self) -> Labels:
        return Labels(self.group_by, self.groups, self.subjects, self.subject_group, self.subject_images)


def _grid_rows(emb: np.ndarray) -> np.ndarray:
    """Rows re-normalised in float64 (inputs should be unit length already, but an int8 variant's output may drift
    off it), then put on the scorer's 2^-20 grid (search.unit_grid); a zero or non-finite row is refused."""
    norms = np.linalg.norm(np.asarray(emb, dtype=np.float64), axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise InputError(BAD_EMBEDDING_ROW.format(what="pair_scores", row=int(bad[0])))
    return unit_grid(emb)


def _subject_groups(subjects: pd.Series, groups: pd.Series) -> pd.Series:
    """group label per subject; a subject seen in two groups is an input error (labels must be per subject)."""
    table = pd.DataFrame({"subject": subjects, "group": groups}).drop_duplicates()
    dup = table[table["subject"].duplicated(keep=False)]
    if not dup.empty:
        s = dup["subject"].iloc[0]
        g1, g2 = sorted(dup.loc[dup["subject"] == s, "group"])[:2]
        raise InputError(SUBJECT_IN_TWO_GROUPS.format(what="pair_scores", subject=s, g1=g1, g2=g2))
    return table.set_index("subject")["group"]


def _layout(emb: np.ndarray, subjects: Sequence, groups: Sequence, group_by: str, what: str = "pair_scores"):
    """(Labels, grid rows sorted by (group, subject), each sorted row's subject index, group bounds in them)."""
    as_2d_float(emb, what)  # the shape check and its message
    e = _grid_rows(emb)
    same_length(what, emb=e, subjects=subjects, groups=groups)
    subj_s = pd.Series(np.asarray(subjects, dtype=object).astype(str))
    grp_s = pd.Series(np.asarray(groups, dtype=object).astype(str))
    subject_group = _subject_groups(subj_s, grp_s)
    group_names = tuple(sorted(subject_group.unique()))
    subject_names = np.array(sorted(subject_group.index))
    s_idx = np.searchsorted(subject_names, subj_s.to_numpy(dtype=str)).astype(np.int32)
    g_of_subject = np.searchsorted(group_names, subject_group.loc[subject_names].to_numpy(dtype=str)).astype(np.int32)
    g_idx = g_of_subject[s_idx]

    order = np.lexsort((s_idx, g_idx))  # rows of a group are contiguous, and within it rows of a subject
    e, s_idx, g_idx = e[order], s_idx[order], g_idx[order]
    bounds = np.searchsorted(g_idx, np.arange(len(group_names) + 1))
    labels = Labels(group_by, group_names, subject_names, g_of_subject,
                    np.bincount(s_idx, minlength=subject_names.size))
    return labels, e, s_idx, bounds


def _pair_blocks(labels: Labels, e: np.ndarray, s_idx: np.ndarray, bounds: np.ndarray, block_rows: int,
                 with_codes: bool = True):
    """Every unordered pair of rows once, as tiles (group pair, genuine scores, their subject, impostor scores,
    their subject-pair codes a * S + b): `block_rows` rows against 2 x `block_rows` columns of the rest of their
    group, then of each later group, so a tile holds at most 2 x block_rows^2 pairs whatever the number of rows.
    Sorted rows make every code oriented as Labels.pair_codes. `with_codes` False: no subject-pair codes (None),
    for the impostor histogram, which needs the scores only."""
    n_subj = labels.n_subjects
    code_type = np.int32 if n_subj * n_subj < 2**31 else np.int64
    codes = s_idx.astype(code_type) * code_type(n_subj)  # row i's subject as the "a" of a pair code a * S + b
    block_cols = 2 * block_rows
    none = np.empty(0)
    for gi in range(len(labels.groups)):
        lo_i, hi_i = bounds[gi], bounds[gi + 1]
        for r0 in range(lo_i, hi_i, block_rows):
            r1 = min(r0 + block_rows, hi_i)
            # Same group: columns from r0 on, keep the strict upper triangle (each unordered pair once).
            for c0 in range(r0, hi_i, block_cols):
                c1 = min(c0 + block_cols, hi_i)
                block = similarity(e[r0:r1], e[c0:c1])
                if c0 >= r1:  # wholly above the diagonal: every pair of the tile
                    rows = np.repeat(np.arange(r1 - r0), c1 - c0)
                    sa, sb = s_idx[r0 + rows], np.tile(s_idx[c0:c1], r1 - r0)
                    scores = block.ravel()
                else:
                    rows, cols = np.nonzero((c0 + np.arange(c1 - c0))[None, :] > (r0 + np.arange(r1 - r0))[:, None])
                    sa, sb = s_idx[r0 + rows], s_idx[c0 + cols]
                    scores = block[rows, cols]
                    del cols
                del block
                same = sa == sb
                yield ((gi, gi), scores[same], sa[same], scores[~same],
                       codes[r0 + rows[~same]] + sb[~same] if with_codes else None)
                del rows, sa, sb, scores, same
            # Other groups: every pair is an impostor pair.
            for gj in range(gi + 1, len(labels.groups)):
                for c0 in range(bounds[gj], bounds[gj + 1], block_cols):
                    c1 = min(c0 + block_cols, bounds[gj + 1])
                    yield ((gi, gj), none, none, similarity(e[r0:r1], e[c0:c1]).ravel(),
                           (codes[r0:r1, None] + s_idx[None, c0:c1]).ravel() if with_codes else None)


def pair_scores(
    emb: np.ndarray,
    subjects: Sequence,
    groups: Sequence,
    *,
    group_by: str = "group",
    block_rows: int = 1024,
) -> PairScores:
    """Score every pair of rows of `emb` (cosine, by the search scorer's exact `similarity` of grid rows) and
    file the scores by group pair.

    `subjects[i]` and `groups[i]` label row i (group labels as built by inputs.group_labels, e.g. "female*black").
    Work is blockwise: `block_rows` rows against 2 x `block_rows` columns at a time (_pair_blocks);
    scores are exact, so `block_rows` and the order of the rows change no score and no count. Where no per-pair
    score is needed (rates and the tuned threshold only), `verification_counts` reduces the same blocks to
    mergeable counts instead of keeping them.
    """
    labels, e, s_idx, bounds = _layout(emb, subjects, groups, group_by)
    code_type = np.int32 if labels.n_subjects ** 2 < 2**31 else np.int64
    genuine, genuine_subj = [], []
    chunks: dict[tuple[int, int], list[np.ndarray]] = {}
    pair_codes: dict[tuple[int, int], list[np.ndarray]] = {}
    for key, g_scores, g_subj, i_scores, i_codes in _pair_blocks(labels, e, s_idx, bounds, block_rows):
        if key[0] == key[1]:
            genuine.append(g_scores)
            genuine_subj.append(g_subj)
        chunks.setdefault(key, []).append(i_scores)
        pair_codes.setdefault(key, []).append(i_codes)

    impostor: dict[tuple[int, int], np.ndarray] = {}
    impostor_pairs: dict[tuple[int, int], np.ndarray] = {}
    for key in sorted(chunks):
        impostor[key] = np.concatenate(chunks.pop(key))
        impostor_pairs[key] = np.concatenate(pair_codes.pop(key)).astype(code_type, copy=False)
    return PairScores(
        group_by=group_by,
        groups=labels.groups,
        subjects=labels.subjects,
        subject_group=labels.subject_group,
        subject_images=labels.subject_images,
        genuine=np.concatenate(genuine).astype(np.float64, copy=False),
        genuine_subject=np.concatenate(genuine_subj).astype(np.int32),
        impostor=impostor,
        impostor_pairs=impostor_pairs,
    )


CHUNK = 1 << 22  # scores reduced at a time where a stored array is read (bounds the temporaries to ~64 MB)


def _chunks(arrays: Sequence[np.ndarray]):
    for a in arrays:
        for i in range(0, a.size, CHUNK):
            yield a[i:i + CHUNK]


def _check_target(target_fmr: float) -> None:
    if not 0.0 < target_fmr < 1.0:
        raise InputError(BAD_TARGET_FMR.format(target=target_fmr))


def threshold_at_fmr(impostor_scores: "PairScores | VerificationCounts | np.ndarray",
                     target_fmr: float = 1e-3) -> float:
    """The lowest impostor score t with FMR(t) = #{impostor > t}/N <= target_fmr (match iff score > t).

    t is the (k+1)-th largest impostor score, k = floor(target_fmr * N). Computed on the reference variant's
    impostors and then applied unchanged to every group and variant (the FRVT "one global threshold" rule).
    Takes a PairScores, a 1-D score array, or a VerificationCounts tuned to `target_fmr`. Found as the blocked
    scorer finds it (verification_partials): the impostor histogram per 2^-20 bin locates the bin holding t, and
    t is picked among that bin's scores.
    """
    _check_target(target_fmr)
    if isinstance(impostor_scores, VerificationCounts):  # tuned while counting (verification_counts)
        if impostor_scores.tuned is None or impostor_scores.target_fmr != target_fmr:
            raise ValueError(f"threshold_at_fmr: these counts hold no threshold tuned to FMR {target_fmr}")
        return impostor_scores.tuned
    if isinstance(impostor_scores, PairScores):
        arrays = [a for a in impostor_scores.impostor.values() if a.size]
    else:
        arrays = [np.asarray(impostor_scores, dtype=np.float64).ravel()]
    if not sum(a.size for a in arrays):
        raise InputError(NO_IMPOSTORS.format(what="threshold_at_fmr"))
    hist = merge_all(map(ImpostorHistogram.of_impostors, _chunks(arrays)), ImpostorHistogram.combine)
    b, rank, _ = hist.locate(target_fmr)
    in_bin = np.concatenate([c[score_bin(c) == b] for c in _chunks(arrays)])
    return nth_largest(in_bin, rank)


@dataclass(frozen=True, eq=False)
class VerificationCounts:
    """Verification reduced to counts (verification_partials): who the rows are, the FMR-tuned threshold (None
    when none was tuned) and, at each threshold counted, per-subject misses and per-subject-pair exceedances.
    per_group_error_rates takes it in place of a PairScores, at the thresholds it holds."""

    labels: Labels
    tuned: float | None
    target_fmr: float | None
    at: dict[float, Exceedances]

    @property
    def group_by(self) -> str:
        return self.labels.group_by

    @property
    def groups(self) -> tuple[str, ...]:
        return self.labels.groups

    @property
    def subjects(self) -> np.ndarray:
        return self.labels.subjects

    @property
    def n_genuine(self) -> int:
        return int(self.labels.genuine_pairs().sum())

    @property
    def n_impostor(self) -> int:
        return int(sum(self.labels.impostor_pairs().values()))


def verification_counts(
    emb: np.ndarray,
    subjects: Sequence,
    groups: Sequence,
    *,
    group_by: str = "group",
    target_fmr: float | None = None,
    thresholds: Sequence[float] = (),
    block_rows: int = 1024,
) -> VerificationCounts:
    """The blocked, mergeable scorer: the same pairs and scores as `pair_scores`, reduced block by block to
    counts, with no per-pair array kept (memory independent of the number of pairs; verification_partials).

    Pass 1 (when `target_fmr` is set and there are impostors): the impostor histogram, which locates the bin of
    the threshold tuned to `target_fmr`. Pass 2: counts at each of `thresholds` (cut-offs, a reference's
    threshold) and at the tuned one. Rows from it equal per_group_error_rates on `pair_scores` of the same input,
    bit for bit, and its tuned threshold is threshold_at_fmr's.
    """
    labels, e, s_idx, bounds = _layout(emb, subjects, groups, group_by, "verification_counts")
    n_impostor = sum(labels.impostor_pairs().values())
    explicit = tuple(dict.fromkeys(float(t) for t in thresholds))
    bin_, rank = None, 0
    if target_fmr is not None:
        _check_target(target_fmr)

    def tiles(with_codes: bool = True):
        return _pair_blocks(labels, e, s_idx, bounds, block_rows, with_codes)

    if target_fmr is not None and n_impostor and n_impostor + labels.genuine_pairs().sum() <= 2 * block_rows ** 2:
        held = list(tiles())  # no more pairs than one tile holds: score them once, read them in both passes
        tiles = lambda with_codes=True: iter(held)  # noqa: E731
    if target_fmr is not None and n_impostor:
        hist = merge_all((ImpostorHistogram.of_impostors(i_s) for _, _, _, i_s, _ in tiles(False)),
                         ImpostorHistogram.combine)
        bin_, rank, _ = hist.locate(target_fmr)
    counted = merge_all((PairCounts.of_genuine(labels, g_s, g_subj, explicit, bin_).merge(
        PairCounts.of_impostors(labels, i_s, i_codes, explicit, bin_))
        for _, g_s, g_subj, i_s, i_codes in tiles()), PairCounts.combine)
    at = {t: counted.at(j) for j, t in enumerate(explicit)}
    tuned = None
    if bin_ is not None:
        tuned = counted.tuned_threshold(rank)
        at[tuned] = counted.resolve(tuned)
    return VerificationCounts(labels, tuned, target_fmr, at)


def _counts(scores: PairScores | VerificationCounts, thresholds: Sequence[float]) -> VerificationCounts:
    """Counts at each threshold: looked up in a VerificationCounts, or reduced from a PairScores' arrays by the
    same partials (its genuine array and each impostor array, in chunks)."""
    if isinstance(scores, VerificationCounts):
        missing = [t for t in thresholds if float(t) not in scores.at]
        if missing:
            raise ValueError(f"per_group_error_rates: no counts at threshold {missing[0]} (count it first)")
        return scores
    labels = scores.labels
    ts = tuple(dict.fromkeys(float(t) for t in thresholds))
    parts = [PairCounts.of_genuine(labels, scores.genuine, scores.genuine_subject, ts)]
    for key, arr in scores.impostor.items():
        for i in range(0, arr.size, CHUNK):
            parts.append(PairCounts.of_impostors(labels, arr[i:i + CHUNK], scores.impostor_pairs[key][i:i + CHUNK], ts))
    counted = merge_all(parts, PairCounts.combine)
    return VerificationCounts(labels, None, None, {t: counted.at(j) for j, t in enumerate(ts)})


def _counts_at(scores: PairScores | VerificationCounts, threshold: float) -> tuple[Labels, Exceedances]:
    c = _counts(scores, [threshold])
    return c.labels, c.at[float(threshold)]


def _repeated_sum(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """x[i] added to itself c[i] times, one addition at a time: the value a sparse matrix gets from c[i]
    duplicate entries x[i] (scipy sums duplicates in sequence), so q_ss' from a count C_ss' is bit for bit the
    one summed from C_ss' per-pair entries of 1 / (m_s m_s'). max(c) vectorised steps (the pairs of the largest
    subject pair above the threshold), O(sum c) additions, O(len(c)) memory."""
    order = np.argsort(-c, kind="stable")
    xs, cs = x[order], c[order]
    acc = xs.copy()
    neg = -cs  # ascending
    for step in range(2, int(cs[0]) + 1 if cs.size else 0):
        n = int(np.searchsorted(neg, -step, side="right"))  # entries with c >= step
        acc[:n] += xs[:n]
    out = np.empty_like(acc)
    out[order] = acc
    return out


NO_GENUINE = "no genuine pairs"
NO_IMPOSTOR = "no impostor pairs"


@dataclass(frozen=True)
class _Cell:
    """One reported rate: its metric and group, the subjects it stands on, and its raw pair counts at a threshold."""

    metric: str
    group: str
    members: np.ndarray  # bool per subject: the subjects whose comparisons this rate covers
    n: int  # comparisons (pairs)
    k: int  # errors among them
    n_units: int  # subjects (FNMR) or subject pairs (FMR) the weighted value averages over


class _Estimator:
    """The subject-weighted rates of every cell at one threshold, for any subject multiplicities w.

    w is (resamples x subjects); w = 1 everywhere is the data itself. A subject drawn w_s times counts w_s times:
        FNMR*_g = sum_{s in g} w_s r_s / sum_{s in g} w_s h_s,   r_s = fn_s / gn_s, h_s = [gn_s > 0]
        FMR*_c  = sum_{(s,s') in c} w_s w_s' q_ss' / D_c(w),     q_ss' = C_ss' / (m_s m_s')
    with fn_s, gn_s the non-matching and all genuine pairs of s, C_ss' the image pairs of s and s' scoring above
    the threshold, m_s the images of s, and D_c(w) the weighted number of subject pairs of cell c:
    ((sum_g w)^2 - sum_g w^2) / 2 within group g, (sum_i w)(sum_j w) across groups i and j. Pairs between two
    copies of one subject would be genuine pairs of that subject: they are not impostors and are not counted.
    Cost: O(resamples x (subjects + subject pairs above the threshold)), never O(resamples x pairs).
    """

    def __init__(self, scores: PairScores | VerificationCounts, threshold: float):
        labels, ex = _counts_at(scores, threshold)
        n_subj, n_groups = labels.n_subjects, len(labels.groups)
        self.n_subj = n_subj
        self.onehot = sparse.csr_matrix(
            (np.ones(n_subj), (np.arange(n_subj), labels.subject_group)), shape=(n_subj, n_groups))
        gn = labels.genuine_pairs().astype(float)
        fn = ex.misses.astype(float)
        self.has_genuine = gn > 0
        self.subject_fnmr = np.divide(fn, gn, out=np.zeros(n_subj), where=gn > 0)
        m = labels.subject_images.astype(float)
        cell_a, cell_b = labels.cell_of(ex.codes)
        all_a, all_b = np.divmod(ex.codes, n_subj)
        # q_ss' = C_ss' / (m_s m_s'): C_ss' image pairs of subject pair (s, s') above the threshold
        q_all = _repeated_sum(1.0 / (m[all_a] * m[all_b]), ex.counts)
        self.q: dict[tuple[int, int], sparse.csr_matrix | None] = {}
        for key in sorted(labels.impostor_pairs()):
            in_cell = (cell_a == key[0]) & (cell_b == key[1])
            a, b = all_a[in_cell], all_b[in_cell]
            self.q[key] = (sparse.csr_matrix((q_all[in_cell], (a, b)), shape=(n_subj, n_subj)) if a.size else None)

    def fnmr(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per group (resamples x groups), overall (resamples,)) subject-weighted FNMR; NaN where no subject."""
        num = np.asarray((self.onehot.T @ (w * self.subject_fnmr).T).T)
        den = np.asarray((self.onehot.T @ (w * self.has_genuine).T).T)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den, num.sum(axis=1) / den.sum(axis=1)

    def fmr(self, w: np.ndarray) -> tuple[dict[tuple[int, int], np.ndarray], np.ndarray]:
        """({cell (gi, gj): (resamples,)}, overall (resamples,)) subject-pair-weighted FMR; NaN where no pair."""
        per_group = np.asarray((self.onehot.T @ w.T).T)  # (resamples x groups): sum of w over each group
        per_group_sq = np.asarray((self.onehot.T @ (w * w).T).T)
        cells, num_all = {}, np.zeros(w.shape[0])
        for (i, j), q in self.q.items():
            num = ((q @ w.T).T * w).sum(axis=1) if q is not None else np.zeros(w.shape[0])
            den = ((per_group[:, i] ** 2 - per_group_sq[:, i]) / 2.0 if i == j
                   else per_group[:, i] * per_group[:, j])
            with np.errstate(invalid="ignore", divide="ignore"):
                cells[(i, j)] = num / den
            num_all += num
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return cells, num_all / ((total**2 - (w * w).sum(axis=1)) / 2.0)

    def rates(self, w: np.ndarray) -> dict[tuple[str, object], np.ndarray]:
        """Every cell's weighted rate, keyed (metric, group index | (gi, gj) | ALL), each (resamples,)."""
        fnmr_g, fnmr_all = self.fnmr(w)
        fmr_cells, fmr_all = self.fmr(w)
        out: dict[tuple[str, object], np.ndarray] = {("fnmr", ALL): fnmr_all, ("fmr", ALL): fmr_all}
        out.update({("fnmr", g): fnmr_g[:, g] for g in range(fnmr_g.shape[1])})
        out.update({("fmr_cross", key): v for key, v in fmr_cells.items()})
        out.update({("fmr", i): v for (i, j), v in fmr_cells.items() if i == j})
        return out


def _cells(scores: PairScores | VerificationCounts, threshold: float) -> list[tuple[tuple[str, object], _Cell]]:
    """The rows to report, in order: FNMR (all, groups), FMR (all, groups), the cross-group FMR matrix.

    A group with subjects but no genuine pair (every subject has one image), or no same-group impostor pair (one
    subject), still gets a row: its rate is "not computable" and says why. Cross cells with no pair are left out.
    """
    labels, ex = _counts_at(scores, threshold)
    n_subj = labels.n_subjects
    n_groups = len(labels.groups)
    gn = labels.genuine_pairs()
    gen_n = np.bincount(labels.subject_group, weights=gn, minlength=n_groups).astype(int)
    gen_k = np.bincount(labels.subject_group, weights=ex.misses, minlength=n_groups).astype(int)
    has_genuine = gn > 0
    in_group = [labels.subject_group == g for g in range(n_groups)]
    everyone = np.ones(n_subj, bool)
    n_imp = labels.impostor_pairs()
    cell_a, cell_b = labels.cell_of(ex.codes)
    above = {key: int(ex.counts[(cell_a == key[0]) & (cell_b == key[1])].sum()) for key in n_imp}

    def pairs_of(s_a: int, s_b: int | None = None) -> int:
        return s_a * (s_a - 1) // 2 if s_b is None else s_a * s_b

    cells = [(("fnmr", ALL), _Cell("fnmr", ALL, everyone & has_genuine, int(gen_n.sum()), int(gen_k.sum()),
                                   int(has_genuine.sum())))]
    cells += [(("fnmr", g), _Cell("fnmr", name, in_group[g] & has_genuine, int(gen_n[g]), int(gen_k[g]),
                                  int((in_group[g] & has_genuine).sum())))
              for g, name in enumerate(labels.groups)]
    cells.append((("fmr", ALL), _Cell("fmr", ALL, everyone, int(sum(n_imp.values())), sum(above.values()),
                                      pairs_of(n_subj))))
    cells += [(("fmr", g), _Cell("fmr", name, in_group[g], n_imp[(g, g)], above[(g, g)],
                                 pairs_of(int(in_group[g].sum()))))
              for g, name in enumerate(labels.groups)]
    for (i, j), n in sorted(n_imp.items()):
        if n:
            s_i, s_j = int(in_group[i].sum()), int(in_group[j].sum())
            cells.append((("fmr_cross", (i, j)),
                          _Cell("fmr_cross", f"{labels.groups[i]}{PAIR_SEP}{labels.groups[j]}",
                                in_group[i] | in_group[j], n, above[(i, j)],
                                pairs_of(s_i) if i == j else pairs_of(s_i, s_j))))
    return cells


def _interval(cell: _Cell, boot: np.ndarray, confidence: float) -> tuple[float | None, float | None, str]:
    """The interval shown for a weighted rate (docs/metrics.md, "Subject-level intervals").

    No pair in error (k = 0) or every pair (k = n): every resample gives the same value, so the one-sided
    Clopper-Pearson bound over the rate's subjects (rates.zero_count_interval). Otherwise the subject-bootstrap
    percentile interval over the resamples in which the rate is defined (NaN resamples, a group absent from the
    resample, are left out and counted in "n_valid"), never narrower than that zero-count bound for the same
    subjects (rates.subject_interval_floor): when one subject holds every error the bootstrap alone says how often
    that subject is drawn, not how little 8 subjects can tell. Method "subject_bootstrap", or
    "subject_bootstrap_floored" where the floor moved an end.
    """
    n_subjects = int(cell.members.sum())
    if cell.k in (0, cell.n):
        return zero_count_interval(0 if cell.k == 0 else n_subjects, n_subjects, confidence)
    lo, hi = percentile_ci(boot, confidence)
    lo, hi, floored = subject_interval_floor(lo, hi, n_subjects, confidence)
    return lo, hi, "subject_bootstrap_floored" if floored else "subject_bootstrap"


def per_group_error_rates(
    scores: PairScores | VerificationCounts,
    *,
    threshold: float | None,
    fixed_thresholds: Sequence[float] = (),
    target_fmr: float | None = None,
    small_n: int = 30,
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Rate rows of FNMR ("fnmr"), same-group FMR ("fmr") and the cross-group FMR matrix ("fmr_cross",
    group "a|b" for a <= b, diagonal included) at `threshold` and at each fixed cut-off.

    "value" is the subject-weighted rate (see _Estimator; unit "subject" for FNMR, "subject_pair" for FMR, over
    "n_units" of them, standing on "n_subjects" subjects); "ci_lo"/"ci_hi" its interval, from `n_boot`
    resamples of subjects (seeded; the same resamples at every threshold) and never narrower than the
    one-sided Clopper-Pearson bound for its subjects, or that bound itself when the count is 0 or n
    ("ci_method" says which: see _interval). The raw counts stay: "n" and "k" count pairs,
    "pair_value" = k/n with its Wilson interval over pairs ("pair_ci_lo"/"pair_ci_hi"), which assumes
    independent pairs and is narrower than the truth. "n_valid": resamples in which the rate was defined (a small
    group can be absent from a resample). "small": n_units < small_n. A rate with no pairs at all has
    "value": null, "status": "not_computable" and a "reason" ("no genuine pairs" / "no impostor pairs").
    Every row carries "threshold", "threshold_kind" ("tuned": the FMR-tuned threshold, recorded with its
    `target_fmr`; "fixed": a user cut-off, e.g. 0.8, so its "all" rows say what 0.8 means on this data).
    `threshold` None (no impostor pair to tune one on) gives "not computable" tuned rows and the fixed ones.
    """
    check_confidence(confidence, "per_group_error_rates")
    tuned = [] if threshold is None else [(float(threshold), "tuned", target_fmr)]
    settings = tuned + [(float(t), "fixed", None) for t in fixed_thresholds]
    scores = _counts(scores, [thr for thr, _, _ in settings])  # one reduction for every threshold
    estimators = [_Estimator(scores, thr) for thr, _, _ in settings]
    n_subj = scores.subjects.size
    rng = np.random.default_rng(seed)
    per_chunk = max(1, 2_000_000 // max(n_subj, 1))  # bounds the (resamples x subjects) float matrix to ~16 MB
    boot: list[dict[tuple[str, object], list[np.ndarray]]] = [{} for _ in settings]
    for start in range(0, n_boot, per_chunk):
        w = resample_counts(rng, n_subj, min(per_chunk, n_boot - start))
        for parts, est in zip(boot, estimators):
            for key, v in est.rates(w).items():
                parts.setdefault(key, []).append(v)
    rows = [] if tuned else [  # nothing to tune a threshold on: say so where the operating point would be
        {"metric": metric, "group_by": scores.group_by, "group": ALL, "n": 0, "k": 0, "value": None, "ci_lo": None,
         "ci_hi": None, "small": True, "status": "not_computable", "reason": f"{NO_IMPOSTOR}: no threshold tuned",
         "n_subjects": int(scores.subjects.size), "n_units": 0, "threshold": None, "threshold_kind": "tuned",
         "target_fmr": target_fmr} for metric in ("fnmr", "fmr")]
    for (thr, kind, target), est, parts in zip(settings, estimators, boot):
        point = est.rates(np.ones((1, n_subj)))
        context = {"threshold": thr, "threshold_kind": kind, "target_fmr": target}
        cells = _cells(scores, thr)
        # the pair-level Wilson intervals of every cell in one vectorised call (the same formula, element-wise)
        counted = [cell for _, cell in cells if cell.n]
        pair_lo, pair_hi = (wilson_interval(np.array([c.k for c in counted]), np.array([c.n for c in counted]),
                                            confidence) if counted else ((), ()))
        pair_ci = {id(c): (float(lo), float(hi)) for c, lo, hi in zip(counted, pair_lo, pair_hi)}
        for key, cell in cells:
            row = {"metric": cell.metric, "group_by": scores.group_by, "group": cell.group, "n": cell.n,
                   "k": cell.k}
            if cell.n == 0:
                if cell.metric == "fmr_cross":
                    continue
                rows.append({**row, "value": None, "ci_lo": None, "ci_hi": None, "small": True,
                             "status": "not_computable", "reason": NO_GENUINE if cell.metric == "fnmr" else NO_IMPOSTOR,
                             "n_subjects": int(cell.members.sum()), "n_units": 0, **context})
                continue
            value = float(point[key][0])
            samples = np.concatenate(parts[key]) if key in parts else np.empty(0)
            lo, hi, method = _interval(cell, samples, confidence)
            pair_lo, pair_hi = pair_ci[id(cell)]
            rows.append({
                **row, "value": value, "ci_lo": lo, "ci_hi": hi, "small": bool(cell.n_units < small_n),
                "ci_method": method, "unit": "subject" if cell.metric == "fnmr" else "subject_pair",
                "n_units": cell.n_units, "n_subjects": int(cell.members.sum()),
                "pair_value": cell.k / cell.n, "pair_ci_lo": pair_lo, "pair_ci_hi": pair_hi,
                "n_boot": n_boot, "n_valid": int(np.isfinite(samples).sum()), **context,
            })
    return rows
