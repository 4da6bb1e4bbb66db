"""Verification error rates by demographic group, after the NIST FRVT/FRTE demographic-effects protocol.

Every pair of embeddings is compared by cosine similarity: pairs of one subject are genuine, pairs of two
subjects are impostors. A pair is declared a match when its score is strictly above the threshold, so
FMR(t) = #{impostor > t} / #impostor and FNMR(t) = #{genuine <= t} / #genuine.
Per group (Grother, Ngan, Hanaoka 2019, NISTIR 8280 "Face Recognition Vendor Test Part 3: Demographic Effects"):
FNMR over the genuine pairs of the group's subjects; FMR over same-group impostor pairs (both subjects in the
group), since impostors of one's own demographic are the ones that drive false matches; the cross-group FMR
matrix covers every pair of groups.

Scale: 10,000 embeddings give ~50 million impostor pairs. Scores are computed blockwise by matrix products and
kept only as one sorted float32 array per group pair (4 bytes a pair), so any threshold is an exact
np.searchsorted; the same-group arrays carry the two subject indices of each pair (int32) for the bootstrap.
No table of pairs is ever built.
"""

from __future__ import annotations

import math
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
from harness.metrics.rates import rate_row

PAIR_SEP = "|"  # names a cross-group cell: "female|male"


@dataclass(frozen=True, eq=False)
class PairScores:
    """All genuine and impostor cosine scores of one embeddings matrix, indexed by group.

    groups: sorted group names; subjects: sorted subject labels; subject_group[s]: group index of subject s;
    subject_images[s]: rows (images) of subject s; genuine / genuine_subject: one score and subject index per
    genuine pair; impostor[(gi, gj)] (gi <= gj): ascending impostor scores between groups gi and gj;
    same_group_subjects[g]: (subject a, subject b) of each pair in impostor[(g, g)], in the same order.
    """

    group_by: str
    groups: tuple[str, ...]
    subjects: np.ndarray
    subject_group: np.ndarray
    subject_images: np.ndarray
    genuine: np.ndarray
    genuine_subject: np.ndarray
    impostor: dict[tuple[int, int], np.ndarray]
    same_group_subjects: dict[int, tuple[np.ndarray, np.ndarray]]

    @property
    def n_impostor(self) -> int:
        return int(sum(a.size for a in self.impostor.values()))


def _unit_rows(emb: np.ndarray) -> np.ndarray:
    """Re-normalise rows: inputs should be unit length already, but an int8 variant's output may drift off it."""
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if bad.size:
        raise InputError(BAD_EMBEDDING_ROW.format(what="pair_scores", row=int(bad[0])))
    return emb / norms


def _subject_groups(subjects: pd.Series, groups: pd.Series) -> pd.Series:
    """group label per subject; a subject seen in two groups is an input error (labels must be per subject)."""
    table = pd.DataFrame({"subject": subjects, "group": groups}).drop_duplicates()
    dup = table[table["subject"].duplicated(keep=False)]
    if not dup.empty:
        s = dup["subject"].iloc[0]
        g1, g2 = sorted(dup.loc[dup["subject"] == s, "group"])[:2]
        raise InputError(SUBJECT_IN_TWO_GROUPS.format(what="pair_scores", subject=s, g1=g1, g2=g2))
    return table.set_index("subject")["group"]


def pair_scores(
    emb: np.ndarray,
    subjects: Sequence,
    groups: Sequence,
    *,
    group_by: str = "group",
    block_rows: int = 1024,
) -> PairScores:
    """Score every pair of rows of `emb` (cosine) and file the scores by group pair.

    `subjects[i]` and `groups[i]` label row i (group labels as built by inputs.group_labels, e.g. "female*black").
    Work is blockwise: `block_rows` rows against a group's rows at a time (~block_rows x n float32 in memory).
    """
    e = _unit_rows(as_2d_float(emb, "pair_scores"))
    same_length("pair_scores", emb=e, subjects=subjects, groups=groups)
    subj_s = pd.Series(np.asarray(subjects, dtype=object).astype(str))
    grp_s = pd.Series(np.asarray(groups, dtype=object).astype(str))
    subject_group = _subject_groups(subj_s, grp_s)
    group_names = tuple(sorted(subject_group.unique()))
    subject_names = np.array(sorted(subject_group.index))
    if subject_names.size < 2:
        raise InputError(NO_IMPOSTORS.format(what="pair_scores"))
    s_idx = np.searchsorted(subject_names, subj_s.to_numpy(dtype=str)).astype(np.int32)
    g_of_subject = np.searchsorted(group_names, subject_group.loc[subject_names].to_numpy(dtype=str)).astype(np.int32)
    g_idx = g_of_subject[s_idx]

    order = np.lexsort((s_idx, g_idx))  # rows of a group are contiguous, and within it rows of a subject
    e, s_idx, g_idx = e[order], s_idx[order], g_idx[order]
    bounds = np.searchsorted(g_idx, np.arange(len(group_names) + 1))

    genuine, genuine_subj = [], []
    chunks: dict[tuple[int, int], list[np.ndarray]] = {}
    pair_subj: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for gi in range(len(group_names)):
        lo_i, hi_i = bounds[gi], bounds[gi + 1]
        for r0 in range(lo_i, hi_i, block_rows):
            r1 = min(r0 + block_rows, hi_i)
            # Same group: columns from r0 on, keep the strict upper triangle (each unordered pair once).
            block = e[r0:r1] @ e[r0:hi_i].T
            rows, cols = np.nonzero(np.arange(hi_i - r0)[None, :] > np.arange(r1 - r0)[:, None])
            sa, sb = s_idx[r0 + rows], s_idx[r0 + cols]
            scores = block[rows, cols]
            same = sa == sb
            genuine.append(scores[same])
            genuine_subj.append(sa[same])
            chunks.setdefault((gi, gi), []).append(scores[~same])
            pair_subj.setdefault(gi, []).append((sa[~same], sb[~same]))
            del block, rows, cols, sa, sb, scores, same
            # Other groups: every pair is an impostor pair.
            for gj in range(gi + 1, len(group_names)):
                chunks.setdefault((gi, gj), []).append((e[r0:r1] @ e[bounds[gj]:bounds[gj + 1]].T).ravel())

    impostor: dict[tuple[int, int], np.ndarray] = {}
    same_group_subjects: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for key in sorted(chunks):
        scores = np.concatenate(chunks.pop(key)) if chunks[key] else np.empty(0, np.float32)
        if key[0] == key[1]:
            parts = pair_subj.pop(key[0])
            sa = np.concatenate([p[0] for p in parts])
            sb = np.concatenate([p[1] for p in parts])
            perm = np.argsort(scores, kind="stable")
            impostor[key] = scores[perm]
            same_group_subjects[key[0]] = (sa[perm], sb[perm])
        else:
            scores.sort()
            impostor[key] = scores
    return PairScores(
        group_by=group_by,
        groups=group_names,
        subjects=subject_names,
        subject_group=g_of_subject,
        subject_images=np.bincount(s_idx, minlength=subject_names.size),
        genuine=np.concatenate(genuine).astype(np.float32),
        genuine_subject=np.concatenate(genuine_subj).astype(np.int32),
        impostor=impostor,
        same_group_subjects=same_group_subjects,
    )


def threshold_at_fmr(impostor_scores: PairScores | np.ndarray, target_fmr: float = 1e-3) -> float:
    """The lowest impostor score t with FMR(t) = #{impostor > t}/N <= target_fmr (match iff score > t).

    t is the (k+1)-th largest impostor score, k = floor(target_fmr * N). Computed on the reference variant's
    impostors and then applied unchanged to every group and variant (the FRVT "one global threshold" rule).
    Takes a PairScores (uses its sorted arrays: only the top k+1 of each is looked at) or a 1-D score array.
    """
    if not 0.0 < target_fmr < 1.0:
        raise InputError(BAD_TARGET_FMR.format(target=target_fmr))
    if isinstance(impostor_scores, PairScores):
        arrays = [a for a in impostor_scores.impostor.values() if a.size]
        n = impostor_scores.n_impostor
    else:
        arrays = [np.asarray(impostor_scores, dtype=np.float64).ravel()]
        n = arrays[0].size
    if n == 0:
        raise InputError(NO_IMPOSTORS.format(what="threshold_at_fmr"))
    k = math.floor(target_fmr * n)
    top = []
    for a in arrays:
        m = min(k + 1, a.size)
        top.append(a[-m:] if isinstance(impostor_scores, PairScores) else np.partition(a, a.size - m)[-m:])
    top_all = np.concatenate(top).astype(np.float64)
    return float(np.partition(top_all, top_all.size - (k + 1))[top_all.size - (k + 1)])


def _above(sorted_scores: np.ndarray, threshold: float) -> int:
    return int(sorted_scores.size - np.searchsorted(sorted_scores, threshold, side="right"))


def per_group_error_rates(
    scores: PairScores,
    *,
    threshold: float,
    fixed_thresholds: Sequence[float] = (),
    target_fmr: float | None = None,
    small_n: int = 30,
    confidence: float = 0.95,
) -> list[dict]:
    """Rate rows of FNMR ("fnmr"), same-group FMR ("fmr") and the cross-group FMR matrix ("fmr_cross",
    group "a|b" for a <= b, diagonal included) at `threshold` and at each fixed cut-off.

    Every row carries "threshold", "threshold_kind" ("tuned": the FMR-tuned threshold, recorded with its
    `target_fmr`; "fixed": a user cut-off, e.g. 0.8, so its "all" rows say what 0.8 means on this data).
    n and k count pairs; Wilson CIs over pairs are narrower than the truth because pairs share subjects
    (see subject_bootstrap for intervals that respect that).
    """
    check_confidence(confidence, "per_group_error_rates")
    genuine_group = scores.subject_group[scores.genuine_subject]
    n_groups = len(scores.groups)
    gen_n = np.bincount(genuine_group, minlength=n_groups)
    settings = [(float(threshold), "tuned", target_fmr)] + [(float(t), "fixed", None) for t in fixed_thresholds]
    rows = []
    for thr, kind, target in settings:
        ctx = {"threshold": thr, "threshold_kind": kind, "target_fmr": target}
        common = {"group_by": scores.group_by, "small_n": small_n, "confidence": confidence, **ctx}
        gen_k = np.bincount(genuine_group, weights=scores.genuine <= thr, minlength=n_groups).astype(int)
        if gen_n.sum():
            rows.append(rate_row(metric="fnmr", group=ALL, n=gen_n.sum(), k=gen_k.sum(), **common))
        rows += [rate_row(metric="fnmr", group=g, n=gen_n[i], k=gen_k[i], **common)
                 for i, g in enumerate(scores.groups) if gen_n[i]]
        above = {key: _above(a, thr) for key, a in scores.impostor.items()}
        rows.append(rate_row(metric="fmr", group=ALL, n=scores.n_impostor, k=sum(above.values()), **common))
        for i, g in enumerate(scores.groups):
            n = scores.impostor[(i, i)].size
            if n:
                rows.append(rate_row(metric="fmr", group=g, n=n, k=above[(i, i)], **common))
        for (i, j), a in sorted(scores.impostor.items()):
            if a.size:
                name = f"{scores.groups[i]}{PAIR_SEP}{scores.groups[j]}"
                rows.append(rate_row(metric="fmr_cross", group=name, n=a.size, k=above[(i, j)], **common))
    return rows


def _resampled_rates(scores: PairScores, threshold: float, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (FMR, FNMR), each (resamples x groups), for subject multiplicities w (resamples x subjects).

    A subject drawn w_s times brings w_s copies of its images. FNMR: sum_s w_s fn_s / sum_s w_s gn_s (fn_s,
    gn_s: non-matching and all genuine pairs of s). Same-group FMR: impostor pairs join copies of two different
    subjects, so the count is the quadratic form sum_{s<s'} w_s w_s' C[s,s'] with C[s,s'] the pairs of s and s'
    scoring above threshold, over sum_{s<s'} w_s w_s' m_s m_s' = ((sum w m)^2 - sum w^2 m^2) / 2 (m_s: images of
    s). Exact for that resampled set, with one stated omission: pairs between two copies of the same subject
    (which would be genuine pairs, including an image with itself at score 1.0) are not added to FNMR.
    Cost: O(resamples x (subjects + same-group pairs above threshold)), never O(resamples x pairs).
    """
    n_groups, n_subj = len(scores.groups), scores.subjects.size
    onehot = sparse.csr_matrix(
        (np.ones(n_subj), (np.arange(n_subj), scores.subject_group)), shape=(n_subj, n_groups)
    )
    gn = np.bincount(scores.genuine_subject, minlength=n_subj).astype(float)
    fn = np.bincount(scores.genuine_subject, weights=scores.genuine <= threshold, minlength=n_subj)
    with np.errstate(invalid="ignore", divide="ignore"):
        fnmr = np.asarray((onehot.T @ (w * fn).T).T) / np.asarray((onehot.T @ (w * gn).T).T)

    m = scores.subject_images.astype(float)
    wm = np.asarray((onehot.T @ (w * m).T).T)
    w2m2 = np.asarray((onehot.T @ ((w * m) ** 2).T).T)
    den = (wm**2 - w2m2) / 2.0
    num = np.zeros_like(den)
    for g in range(n_groups):
        arr = scores.impostor[(g, g)]
        start = arr.size - _above(arr, threshold)
        sa, sb = (x[start:] for x in scores.same_group_subjects[g])
        if sa.size:
            c = sparse.csr_matrix((np.ones(sa.size), (sa, sb)), shape=(n_subj, n_subj))  # duplicates summed
            num[:, g] = ((c.T @ w.T).T * w).sum(axis=1)  # row b: sum_{a,b} w_a C[a,b] w_b
    with np.errstate(invalid="ignore", divide="ignore"):
        fmr = num / den
    return fmr, fnmr


def subject_bootstrap(
    scores: PairScores,
    *,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict]:
    """Percentile CIs for per-group FMR and FNMR by resampling subjects (not pairs) with replacement.

    Pairs share subjects, so pairs are not independent; resampling subjects keeps that dependence (the unit of
    the FRVT demographic analyses). Each resample draws as many subjects as there are, from all groups, so a
    small group may be missing or have no genuine pair in a resample: that rate is NaN and skipped in
    the percentiles; "n_valid" says how many resamples gave a value. Deterministic given `seed`.
    Rows: {"metric", "group_by", "group", "threshold", "value", "boot_lo", "boot_hi", "n_boot", "n_valid", "unit"}.
    """
    check_confidence(confidence, "subject_bootstrap")
    rng = np.random.default_rng(seed)
    n_subj = scores.subjects.size
    per_chunk = max(1, 2_000_000 // n_subj)  # bounds the (resamples x subjects) float matrix to ~16 MB
    fmr_parts, fnmr_parts = [], []
    for start in range(0, n_boot, per_chunk):
        w = resample_counts(rng, n_subj, min(per_chunk, n_boot - start))
        f, r = _resampled_rates(scores, threshold, w)
        fmr_parts.append(f)
        fnmr_parts.append(r)
    point_fmr, point_fnmr = _resampled_rates(scores, threshold, np.ones((1, n_subj)))
    rows = []
    results = (("fmr", np.vstack(fmr_parts), point_fmr[0]), ("fnmr", np.vstack(fnmr_parts), point_fnmr[0]))
    for metric, boot, point in results:
        for g, name in enumerate(scores.groups):
            if not np.isfinite(point[g]):
                continue
            lo, hi = percentile_ci(boot[:, g], confidence)
            rows.append({
                "metric": metric, "group_by": scores.group_by, "group": name, "threshold": float(threshold),
                "value": float(point[g]), "boot_lo": lo, "boot_hi": hi, "n_boot": n_boot,
                "n_valid": int(np.isfinite(boot[:, g]).sum()), "unit": "subject",
            })
    return rows
