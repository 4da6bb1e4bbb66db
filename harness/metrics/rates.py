"""Per-group success rates with Wilson score intervals, in the long "rate row" format.

Rate row (docs/architecture.md): {"metric", "group_by", "group", "n", "k", "value", "ci_lo", "ci_hi", "small"},
plus "excluded": rows of the group whose success is null (failure to acquire, not applicable), counted apart
because a rate over acquired samples only must say how many were left out, and "ci_method": "wilson", or
"clopper_pearson_upper"/"clopper_pearson_lower" for a count of 0 or n (zero_count_interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.stats import beta, norm

from harness.errors import InputError
from harness.metrics.inputs import ALL, BAD_COUNTS, binary_column, check_confidence, group_labels


@lru_cache(maxsize=64)
def normal_quantile(p: float) -> float:
    """Phi^-1(p), the standard normal quantile (scipy.stats.norm.ppf), kept per p: a page asks for the same
    z = Phi^-1(0.975) thousands of times and each scipy call costs more than the interval around it."""
    return float(norm.ppf(p))


@lru_cache(maxsize=4096)
def _beta_quantile(q: float, a: float, b: float) -> float:
    """scipy.stats.beta.ppf(q, a, b), kept per argument (the Clopper-Pearson bound of the same n recurs per row)."""
    return float(beta.ppf(q, a, b))


def wilson_interval(k, n, confidence: float = 0.95):
    """Wilson score interval for a binomial proportion k/n.

    With z = Phi^-1(1 - (1 - confidence)/2) and p = k/n:
        centre = (p + z^2/(2n)) / (1 + z^2/n)
        half   = z * sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n)
    Reference: Wilson, E. B. (1927) JASA 22:209-212; Newcombe, R. G. (1998) Stat. Med. 17:857-872 (method 3).
    Chosen over the Wald interval because it stays inside [0, 1] and keeps its coverage at k = 0 or k = n,
    which is the usual case for FMR and for small demographic groups.
    Accepts scalars (returns a (lo, hi) tuple of floats) or arrays (returns a tuple of arrays); n = 0 gives NaN.
    """
    check_confidence(confidence, "wilson_interval")
    k_arr = np.asarray(k, dtype=float)
    n_arr = np.asarray(n, dtype=float)
    if np.any((k_arr < 0) | (k_arr > n_arr)):
        raise InputError(BAD_COUNTS.format(k=k, n=n))
    z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k_arr / n_arr
        denom = 1.0 + z * z / n_arr
        centre = (p + z * z / (2.0 * n_arr)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n_arr + z * z / (4.0 * n_arr * n_arr)) / denom
    # Exactly 0 at k = 0 and 1 at k = n (true in exact arithmetic; rounding would leave 0.9999999999999999).
    lo = np.where(k_arr == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    hi = np.where(k_arr == n_arr, 1.0, np.clip(centre + half, 0.0, 1.0))
    lo, hi = np.where(n_arr == 0, np.nan, lo), np.where(n_arr == 0, np.nan, hi)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def zero_count_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float, str]:
    """(lo, hi, method) for a count at the edge, k = 0 or k = n: the one-sided Clopper-Pearson bound.

    Nothing observed in n trials bounds the rate above, one-sided, at the exact binomial limit
        k = 0:  hi = 1 - (1 - confidence)^(1/n)        (lo = 0)
        k = n:  lo = (1 - confidence)^(1/n)            (hi = 1)
    Clopper, C. J. & Pearson, E. S. (1934) Biometrika 26:404-413, one-sided; at 95% this is the "rule of three",
    hi ~= 3/n (Hanley & Lippman-Hand 1983, JAMA 249:1743-1745), computed exactly rather than approximated.
    One-sided because the other end is already known: a rate cannot go below 0. Used for every rate row with a
    zero count (here, and verification's subject intervals, whose bootstrap collapses to [0, 0] there).
    """
    check_confidence(confidence, "zero_count_interval")
    if n <= 0 or k not in (0, n):
        raise InputError(BAD_COUNTS.format(k=k, n=n))
    alpha = 1.0 - confidence
    if k == 0:
        return 0.0, _beta_quantile(confidence, 1, n), "clopper_pearson_upper"
    return _beta_quantile(alpha, n, 1), 1.0, "clopper_pearson_lower"


def subject_interval_floor(lo: float | None, hi: float | None, n_subjects: int,
                           confidence: float = 0.95) -> tuple[float, float, bool]:
    """(lo, hi, floored): a subject-level interval widened to at least the zero-count bounds for n_subjects.

    With u = 1 - (1 - confidence)^(1/n) the one-sided Clopper-Pearson bound of zero_count_interval (k = 0),
    the interval becomes [min(lo, 1 - u), max(hi, u)]: it never claims more than n subjects with no error at all
    could (and, mirrored, with every subject in error). A subject bootstrap is degenerate when one or a few
    subjects hold every error: a resample without them gives 0, one with them the same few values, so its
    percentile interval reflects how the errors sit among the subjects drawn, not how many subjects were seen
    (8 subjects, one with all 11 false non-matches: [0, 0.33%] against 31.2% for no error at all). Subject-level
    sampling: ISO/IEC 19795-1:2021, Schuckers (2010) "Computational Methods in Biometric Authentication", ch. 2-3.
    `lo`/`hi` None (no resample defined the rate) gives the floor alone around nothing: [0, 1].
    "floored" says whether either end moved.
    """
    if n_subjects <= 0:
        raise InputError(BAD_COUNTS.format(k=0, n=n_subjects))
    if lo is None or hi is None:
        return 0.0, 1.0, True
    u = zero_count_interval(0, int(n_subjects), confidence)[1]
    new_lo, new_hi = min(float(lo), 1.0 - u), max(float(hi), u)
    return new_lo, new_hi, (new_lo, new_hi) != (float(lo), float(hi))


def paired_difference_interval(a: int, b: int, c: int, d: int, confidence: float = 0.95) -> tuple[float, float]:
    """Score interval for a difference of paired proportions: Newcombe (1998), Stat. Med. 17:2635-2650, method 10.

    Table of n = a + b + c + d pairs: a both right, b only the first (reference) right, c only the second
    (variant) right, d both wrong; the difference is p2 - p1 = (c - b)/n. With (l1, u1), (l2, u2) the Wilson
    intervals of p1 = (a + b)/n and p2 = (a + c)/n, and phi the phi coefficient of the table, continuity-corrected
    as Newcombe specifies (ad - bc replaced by ad - bc - n/2 when that is positive, by 0 when 0 <= ad - bc <= n/2;
    phi = 0 when a margin is empty):
        lo = (p2 - p1) - sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2)
        hi = (p2 - p1) + sqrt((u2 - p2)^2 - 2 phi (u2 - p2)(p1 - l1) + (p1 - l1)^2)
    Unlike a bootstrap it does not collapse when no pair is discordant (b = c = 0): its width then reflects n.
    As in biostatUZH's confIntPairedProportion (Altman et al. 2000, "Statistics with Confidence", p. 52).
    """
    check_confidence(confidence, "paired_difference_interval")
    if min(a, b, c, d) < 0 or a + b + c + d == 0:
        raise InputError(BAD_COUNTS.format(k=f"{a},{b},{c},{d}", n=a + b + c + d))
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    margins = float(a + b) * (c + d) * (a + c) * (b + d)
    cross = float(a) * d - float(b) * c
    cross = cross - n / 2.0 if cross > n / 2.0 else (cross if cross < 0 else 0.0)
    phi = cross / np.sqrt(margins) if margins > 0 else 0.0
    diff = p2 - p1
    lo = diff - np.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    hi = diff + np.sqrt(max((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2, 0.0))
    return float(max(lo, -1.0)), float(min(hi, 1.0))


def rate_row(
    *, metric: str, group_by: str, group: str, n: int, k: int, small_n: int = 30, confidence: float = 0.95, **extra
) -> dict:
    """One JSON-ready rate row from counts; `extra` fields (threshold, excluded, ...) are appended as given.

    The interval is Wilson's, except at k = 0 or k = n, where it is the one-sided Clopper-Pearson bound
    (zero_count_interval): "ci_method" says which.
    """
    if n and k in (0, n):
        lo, hi, method = zero_count_interval(int(k), int(n), confidence)
    else:
        lo, hi = wilson_interval(k, n, confidence)
        method = "wilson"
    row = {
        "metric": metric,
        "group_by": group_by,
        "group": group,
        "n": int(n),
        "k": int(k),
        "value": float(k / n) if n else None,
        "ci_lo": lo if n else None,
        "ci_hi": hi if n else None,
        "small": bool(n < small_n),
        "ci_method": method if n else None,
    }
    row.update(extra)
    return row


def rate_rows(
    df: pd.DataFrame,
    *,
    metric: str,
    success_col: str,
    group_by: Sequence[str],
    small_n: int = 30,
    confidence: float = 0.95,
) -> list[dict]:
    """Overall row (group "all") then one row per observed group of `group_by`, sorted by group name.

    `group_by=["gender", "ethnicity"]` gives intersectional groups "female*black" (group_by "gender*ethnicity");
    a single attribute gives plain groups. Null success values are excluded from n and counted in "excluded";
    groups with no rows are omitted (never reported as 0/0); rows with a null attribute count only in "all".
    """
    what = f"rate_rows({metric})"
    check_confidence(confidence, what)
    gb_name, labels = group_labels(df, group_by, what)
    success = binary_column(df, success_col, what)
    table = pd.DataFrame(
        {"group": labels, "k": success.fillna(0.0), "n": success.notna(), "excluded": success.isna()}
    )
    per_group = table.groupby("group", sort=True)[["k", "n", "excluded"]].sum()
    overall = table[["k", "n", "excluded"]].sum()
    rows = []
    n_all, p_all = int(overall["n"]), (float(overall["k"]) / float(overall["n"]) if overall["n"] else None)
    for group, counts in [(ALL, overall), *per_group.iterrows()]:
        n, k, excluded = int(counts["n"]), int(counts["k"]), int(counts["excluded"])
        if n == 0 and excluded == 0:
            continue
        extra = {"excluded": excluded}
        if group != ALL:
            extra["mdd"] = _group_mdd(n, n_all - n, p_all)
        rows.append(
            rate_row(
                metric=metric, group_by=gb_name, group=str(group), n=n, k=k,
                small_n=small_n, confidence=confidence, **extra,
            )
        )
    return rows


def _group_mdd(n: int, n_rest: int, p_all: float | None) -> float | None:
    """The smallest difference between this group's rate and the rest's that these counts can detect.

    Two-sided two-proportion test at alpha 0.05 with power 0.8, around the overall rate (see
    disparity.min_detectable_difference). A group whose observed gap to the others is below this is not evidence
    of a disparity. None when undefined (no rows, or no other group); JSON has no infinity, so an undetectable
    difference is None as well.
    """
    from harness.metrics.disparity import min_detectable_difference

    if not n or not n_rest or p_all is None:
        return None
    # The test is symmetric in success and failure, and a gap moves a rate towards 0.5 from whichever end it sits
    # at (accuracy 0.995 falls; its error rate 0.005 rises): measure from the nearer end.
    mdd = min_detectable_difference(n, min(p_all, 1.0 - p_all), n_rest)
    return None if not np.isfinite(mdd) else float(mdd)
