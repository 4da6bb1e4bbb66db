"""1:N identification (watchlist search) error rates by demographic group of the probe.

Definitions (NIST FRVT 1:N, Grother, Ngan & Hanaoka, NISTIR 8271 "Part 2: Identification" (2019), sec. 3;
demographic breakdown as in NISTIR 8280 "Part 3: Demographic Effects" (2019), sec. 7; vocabulary of
ISO/IEC 19795-1:2021, 3.6):

- FPIR(t): the share of non-mated searches (the probe's person is not enrolled) that return any candidate scoring
  at or above t. A probe that yields no template (failure to acquire) returns no candidate: not a false positive.
- FNIR(t, R): the share of mated searches whose mate is not returned at or above t within rank R (R = 1 unless
  set). A mated probe with no template is a miss, as in FRVT.
- rank-1 / rank-k hit rate: the share of mated searches whose mate is ranked first / within the first k,
  whatever its score.

Each is reported per probe group with its counts ("n" searches, "k" errors) and a subject-level interval: every
person counts once (the mean over the group's people of their own error share), and the interval comes from a
seeded bootstrap over people (the same scheme as verification's subject-weighted rates, docs/metrics.md), or the
one-sided Clopper-Pearson bound over the people when no search (or every search) of the group errs.

FPIR against gallery size: the gallery is put in one seeded order and FPIR is measured on its nested prefixes
(100, 200, 500, ... up to every template). Larger galleries are not measured: `fpir_model_rows` extends the curve
with the independent-comparisons model FPIR(N) = 1 - (1 - p_t)^N, p_t the share of measured non-mate comparisons
of the group at or above t; those rows carry "kind": "model" and are kept apart from the measured ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.metrics.bootstrap import percentile_ci, resample_counts
from harness.metrics.inputs import ALL, check_confidence
from harness.metrics.rates import zero_count_interval

NESTED_SIZES = (100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)
MODEL_SIZES = (1_000, 10_000, 100_000, 1_000_000)
NO_SEARCHES = "no searches of this kind"


def nested_sizes(n_gallery: int) -> tuple[int, ...]:
    """The nested gallery sizes measured: the standard steps below n_gallery, and n_gallery itself."""
    return tuple(s for s in NESTED_SIZES if s < n_gallery) + ((n_gallery,) if n_gallery else ())


def threshold_at_fpir(top1: np.ndarray, n_searches: int, target_fpir: float) -> float | None:
    """The lowest t with FPIR(t) = #{top1 >= t} / n_searches <= target (top1: each non-mated search's best score,
    -inf for a search with no template). None without searches."""
    if n_searches == 0:
        return None
    allowed = int(np.floor(target_fpir * n_searches))
    finite = np.sort(top1[np.isfinite(top1)])[::-1]
    if allowed >= finite.size:
        return -1.0
    return float(np.nextafter(finite[allowed], np.inf))


def subject_rate_rows(errors: np.ndarray, subjects: Sequence[str], groups: Sequence[str], *, metric: str,
                      group_by: str, n_boot: int, seed: int, confidence: float = 0.95, small_n: int = 30,
                      context: dict | None = None) -> list[dict]:
    """Rate rows (overall, then each group in sorted order) of a per-search 0/1 `errors` array, every subject
    weighted once: value = mean over the group's subjects of their error share; interval by subject bootstrap."""
    check_confidence(confidence, "subject_rate_rows")
    errors = np.asarray(errors, dtype=float)
    subjects = np.asarray(subjects, dtype=object)
    groups = np.asarray(groups, dtype=object)
    context = dict(context or {})
    if subjects.size:
        names, s_idx = np.unique(subjects.astype(str), return_inverse=True)
    else:
        names, s_idx = np.array([]), np.array([], int)
    n_subj = names.size
    per_subject_n = np.bincount(s_idx, minlength=n_subj).astype(float)
    per_subject_k = np.bincount(s_idx, weights=errors, minlength=n_subj)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = per_subject_k / per_subject_n
    subject_group = np.empty(n_subj, dtype=object)
    subject_group[s_idx] = groups
    scopes = [(ALL, np.ones(n_subj, bool))] + [(g, subject_group == g) for g in sorted(set(groups.tolist()))]
    rng = np.random.default_rng(seed)
    w = resample_counts(rng, n_subj, n_boot) if n_subj else np.zeros((n_boot, 0))
    rows = []
    for group, members in scopes:
        n = int(per_subject_n[members].sum())
        k = int(round(per_subject_k[members].sum()))
        n_s = int(members.sum())
        row = {"metric": metric, "group_by": group_by, "group": str(group), "n": n, "k": k, "n_subjects": n_s,
               "n_units": n_s, "unit": "subject", **context}
        if n == 0:
            rows.append({**row, "value": None, "ci_lo": None, "ci_hi": None, "small": True,
                         "status": "not_computable", "reason": NO_SEARCHES})
            continue
        value = float(r[members].mean())
        if k in (0, n):
            lo, hi, method = zero_count_interval(0 if k == 0 else n_s, n_s, confidence)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = (w[:, members] @ r[members]) / w[:, members].sum(axis=1)
            lo, hi = percentile_ci(boot, confidence)
            method = "subject_bootstrap"
        rows.append({**row, "value": value, "ci_lo": lo, "ci_hi": hi, "ci_method": method,
                     "small": bool(n_s < small_n), "search_value": k / n, "n_boot": n_boot})
    return rows


def search_outcomes(top1: np.ndarray, mate_score: np.ndarray, rank: np.ndarray, threshold: float,
                    rank_r: int) -> tuple[np.ndarray, np.ndarray]:
    """(false positive per search, miss per search) at `threshold`: a non-mated search errs when its best candidate
    scores >= t; a mated one when its mate is below t or ranked beyond R (a search without a template: -inf, miss)."""
    fp = top1 >= threshold
    miss = ~((mate_score >= threshold) & (rank <= rank_r))
    return fp, miss


def false_candidate_rows(probe_groups: np.ndarray, top1: np.ndarray, candidate_groups: np.ndarray,
                         threshold: float, context: dict) -> list[dict]:
    """Who the false candidates are: per (probe group, group of the rank-1 candidate), the non-mated searches whose
    rank-1 candidate scores at or above t."""
    hit = top1 >= threshold
    rows = []
    if not hit.any():
        return rows
    pairs, counts = np.unique(np.stack([probe_groups[hit].astype(str), candidate_groups[hit].astype(str)], axis=1),
                              axis=0, return_counts=True)
    totals = {g: int((probe_groups == g).sum()) for g in set(probe_groups.tolist())}
    for (pg, cg), c in zip(pairs, counts):
        rows.append({"probe_group": str(pg), "candidate_group": str(cg), "n_false": int(c),
                     "n_searches": totals[str(pg)], **context})
    return rows


def fpir_model_rows(hist: np.ndarray, group_names: Sequence[str], threshold: float, sizes: Sequence[int],
                    context: dict) -> list[dict]:
    """The labelled model extension of FPIR to larger galleries, per probe group (see module docstring).

    p_t counts histogram bins whose lower edge is >= t (bins of width 2/bins over [-1, 1]), so it can only
    under-count by the comparisons inside the one bin that straddles t."""
    bins = hist.shape[1]
    first = int(np.ceil((threshold + 1.0) * bins / 2.0))
    rows = []
    totals = hist.sum(axis=1)
    for gi, name in enumerate(list(group_names) + [ALL]):
        h = hist[gi] if gi < len(group_names) else hist.sum(axis=0)
        n = int(totals[gi]) if gi < len(group_names) else int(totals.sum())
        above = int(h[max(first, 0):].sum()) if first < bins else 0
        if n == 0:
            continue
        p = above / n
        for size in sizes:
            rows.append({"kind": "model", "model": "independent comparisons: FPIR(N) = 1 - (1 - p_t)^N",
                         "group": str(name), "gallery_size": int(size), "n_comparisons": n, "k_comparisons": above,
                         "p_t": p, "value": float(-np.expm1(size * np.log1p(-p))) if p < 1 else 1.0, **context})
    return rows
