"""Disparity summaries over a set of group rates, and the power to see a difference at all.

Zeros: ratios are reported as they are, never smoothed with an epsilon. A ratio with a zero denominator and a
positive numerator is +inf (in rows: "value": null, "infinite": true, since JSON has no infinity); when every
group's rate is 0 the groups are equal and the ratio is 1.0. The Gini of all-zero rates is 0 (perfect equality).
Fewer than two groups: every summary is NaN (rows are not emitted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import gmean, norm

from harness.errors import InputError
from harness.metrics.inputs import ALL, UNKNOWN_METRIC

# Rate-row fields that describe the group or its counts; every other field (threshold, target_fmr, ...) is
# context that splits rows into separate comparisons, so rates at different thresholds are never mixed.
RATE_ROW_FIELDS = frozenset({"metric", "group_by", "group", "n", "k", "value", "ci_lo", "ci_hi", "small", "excluded",
                             "mdd", "ci_method", "unit", "n_units", "n_subjects", "pair_value", "pair_ci_lo",
                             "pair_ci_hi", "n_boot", "n_valid", "status", "reason"})


@dataclass(frozen=True)
class Summary:
    """A disparity figure and how many groups it was computed over."""

    value: float
    n_groups: int


def _values(values: Iterable[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=float)


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 1.0 if num == 0 else math.inf


def max_min_ratio(values: Iterable[float]) -> Summary:
    """max(r_g) / min(r_g); +inf when the minimum is 0 and the maximum is not, 1.0 when all are 0."""
    v = _values(values)
    if v.size < 2:
        return Summary(math.nan, int(v.size))
    return Summary(_ratio(v.max(), v.min()), int(v.size))


def max_min_diff(values: Iterable[float]) -> Summary:
    """max(r_g) - min(r_g), in rate units (0.05 = five percentage points)."""
    v = _values(values)
    if v.size < 2:
        return Summary(math.nan, int(v.size))
    return Summary(float(v.max() - v.min()), int(v.size))


def max_geomean(values: Iterable[float]) -> Summary:
    """max(r_g) / (prod r_g)^(1/G): NIST FRVT Part 8 (Grother 2019, NISTIR 8280) / FRTE demographic summary.

    The geometric mean is the reference because error rates spread over orders of magnitude. Any zero rate
    makes the geometric mean 0: the figure is then +inf (or 1.0 when every rate is 0).
    """
    v = _values(values)
    if v.size < 2:
        return Summary(math.nan, int(v.size))
    g = float(gmean(v)) if np.all(v > 0) else 0.0
    return Summary(_ratio(float(v.max()), g), int(v.size))


def gini(values: Iterable[float]) -> float:
    """Sample Gini coefficient with the n/(n-1) correction of Howard et al. (2022):

        G = n/(n-1) * sum_i sum_j |x_i - x_j| / (2 n^2 mean(x))

    The correction makes the maximum 1 for a finite number of groups (one group holds all the error).
    All-zero input gives 0. Fewer than two values give NaN.
    """
    v = _values(values)
    n = v.size
    if n < 2:
        return math.nan
    mean = v.mean()
    if mean == 0:
        return 0.0
    pair_sum = np.abs(v[:, None] - v[None, :]).sum()
    return float(n / (n - 1) * pair_sum / (2 * n * n * mean))


def garbe(fmr: Sequence[float], fnmr: Sequence[float], *, alpha: float = 0.5) -> Summary:
    """GARBE = alpha * Gini(FMR_g) + (1 - alpha) * Gini(FNMR_g).

    Gini Aggregation Rate for Biometric Equitability: Howard, Laird, Rubin, Sirotin, Tipton, Vemury (2022),
    "Evaluating proposed fairness models for face recognition algorithms", arXiv:2203.05051. 0 = equal,
    towards 1 = one group carries the errors. alpha weighs false matches against false non-matches.
    """
    f, r = _values(fmr), _values(fnmr)
    n_groups = int(min(f.size, r.size))
    return Summary(alpha * gini(f) + (1 - alpha) * gini(r), n_groups)


def fdr(fmr: Sequence[float], fnmr: Sequence[float], *, alpha: float = 0.5) -> Summary:
    """Fairness Discrepancy Rate: 1 - (alpha * A + (1 - alpha) * B), with
    A = max_{i,j} |FMR_i - FMR_j| and B = max_{i,j} |FNMR_i - FNMR_j| at one threshold.

    Pereira, T. de F. & Marcel, S. (2021), "Fairness in biometrics: a figure of merit to assess biometric
    verification systems", IEEE T-BIOM 4(1):19-29. 1 = perfectly fair; it falls with the absolute gaps.
    """
    a, b = max_min_diff(fmr), max_min_diff(fnmr)
    return Summary(1.0 - (alpha * a.value + (1 - alpha) * b.value), int(min(a.n_groups, b.n_groups)))


def min_detectable_difference(
    n1: int, p1: float, n2: int | None = None, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest increase d over rate p1 that a two-sided two-proportion z-test (level alpha) detects with the given
    power, with n1 and n2 (default n1) samples; normal approximation without continuity correction:

        power(d) = Phi((d - z_{1-alpha/2} * sqrt(pbar (1-pbar) (1/n1 + 1/n2))) / sqrt(p1 q1/n1 + p2 q2/n2)),
        p2 = p1 + d, pbar = (n1 p1 + n2 p2)/(n1 + n2)

    solved for power(d) = power (Fleiss, Levin & Paik 2003, "Statistical Methods for Rates and Proportions",
    sec. 4.2, rearranged for d). Using p2 = p1 + d in the alternative variance keeps the MDD positive at p1 = 0,
    where a pooled-p1 shortcut would claim any difference is detectable. +inf when no d <= 1 - p1 reaches the
    power (the groups are too small to see any gap upward from p1).
    """
    n2 = n1 if n2 is None else n2
    if n1 <= 0 or n2 <= 0:
        return math.inf
    z_a = norm.ppf(1 - alpha / 2)

    def shortfall(d: float) -> float:
        p2 = p1 + d
        pbar = (n1 * p1 + n2 * p2) / (n1 + n2)
        se0 = math.sqrt(pbar * (1 - pbar) * (1 / n1 + 1 / n2))
        se1 = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        if se1 == 0:  # p1 = 0 and p2 = 1: the test statistic is fixed, detection is all or nothing
            return (1.0 if d > z_a * se0 else 0.0) - power
        return norm.cdf((d - z_a * se0) / se1) - power

    top = 1.0 - p1
    if top <= 0 or shortfall(top) < 0:
        return math.inf
    return float(brentq(shortfall, 1e-12, top, xtol=1e-9))


def _context(row: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in row.items() if k not in RATE_ROW_FIELDS))


def _partitions(rate_rows: Iterable[dict], metric: str) -> dict[tuple, list[dict]]:
    """Group rows of `metric` by (group_by, context); the "all" row and groups with no evaluable rows are dropped."""
    rows = list(rate_rows)
    present = sorted({r["metric"] for r in rows})
    if metric not in present:
        raise InputError(UNKNOWN_METRIC.format(what="disparity_rows", metric=metric, present=", ".join(present)))
    parts: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["metric"] != metric or r["group"] == ALL or not r["n"] or r["value"] is None:
            continue
        parts.setdefault((r["group_by"], _context(r)), []).append(r)
    return parts


def _json_value(x: float) -> tuple[float | None, bool]:
    return (None, True) if math.isinf(x) else (float(x), False)


def _units(row: dict) -> int:
    """The count the test of a gap stands on: independent units. Subject-weighted verification rows average over
    "n_units" subjects or subject pairs; their pair count "n" would overstate the power."""
    return int(row.get("n_units") or row["n"])


def _extremes(rows: list[dict], alpha: float, power: float) -> dict:
    """Max and min groups, their gap, and whether the gap is smaller than the MDD of those two groups."""
    hi = max(rows, key=lambda r: (r["value"], r["group"]))
    lo = min(rows, key=lambda r: (r["value"], r["group"]))
    mdd = min_detectable_difference(_units(lo), lo["value"], _units(hi), alpha=alpha, power=power)
    return {
        "max_group": hi["group"], "max_value": hi["value"], "max_n": hi["n"],
        "min_group": lo["group"], "min_value": lo["value"], "min_n": lo["n"],
        "mdd": None if math.isinf(mdd) else mdd,
        "underpowered": bool(hi["value"] - lo["value"] < mdd),
    }


def disparity_rows(
    rate_rows: Iterable[dict], metric: str, *, alpha: float = 0.05, power: float = 0.8
) -> list[dict]:
    """max_min_ratio, max_min_diff, max_geomean, gini and fdr rows for `metric`, one set per group_by and context.

    gini and fdr here are the single-rate forms of GARBE and FDR (verification_disparity_rows combines FMR and
    FNMR): the Gini coefficient of the group rates, and 1 - (max - min), so every rate -- accuracy, recall, failure
    to acquire -- gets the same summaries the verification literature uses.

    Disparity row: {"metric", "group_by", "summary", "value", "n_groups", "underpowered"} plus "infinite",
    the extreme groups ("max_group", "min_group", their values and n), "mdd" and the context fields of the rate
    rows (e.g. "threshold"). `underpowered`: max - min < min_detectable_difference(n_min, p_min, n_max), with n the
    row's "n_units" where it has one (verification: subjects or subject pairs), else its "n".
    """
    out = []
    for (group_by, context), rows in sorted(_partitions(rate_rows, metric).items(), key=lambda kv: repr(kv[0])):
        if len(rows) < 2:
            continue
        values = [r["value"] for r in rows]
        ext = _extremes(rows, alpha, power)
        summaries = (("max_min_ratio", max_min_ratio), ("max_min_diff", max_min_diff), ("max_geomean", max_geomean),
                     ("gini", lambda v: Summary(gini(v), len(v))),
                     ("fdr", lambda v: Summary(1.0 - max_min_diff(v).value, len(v))))
        for name, fn in summaries:
            s = fn(values)
            value, infinite = _json_value(s.value)
            out.append({"metric": metric, "group_by": group_by, "summary": name, "value": value,
                        "n_groups": s.n_groups, "infinite": infinite, **ext, **dict(context)})
    return out


def verification_disparity_rows(
    rate_rows: Iterable[dict],
    *,
    weight: float = 0.5,
    fmr_metric: str = "fmr",
    fnmr_metric: str = "fnmr",
    alpha: float = 0.05,
    power: float = 0.8,
) -> list[dict]:
    """GARBE and FDR rows (metric "fmr+fnmr") from per-group FMR and FNMR rows at the same threshold.

    `weight` is the papers' alpha (FMR's weight). Only groups with both an FMR and an FNMR row take part.
    `underpowered` when either the FMR gap or the FNMR gap is below its MDD.
    """
    rows = list(rate_rows)
    fmr_parts, fnmr_parts = _partitions(rows, fmr_metric), _partitions(rows, fnmr_metric)
    out = []
    for key in sorted(set(fmr_parts) & set(fnmr_parts), key=repr):
        fm = {r["group"]: r for r in fmr_parts[key]}
        fn = {r["group"]: r for r in fnmr_parts[key]}
        groups = sorted(set(fm) & set(fn))
        if len(groups) < 2:
            continue
        f = [fm[g]["value"] for g in groups]
        r = [fn[g]["value"] for g in groups]
        under = (_extremes([fm[g] for g in groups], alpha, power)["underpowered"]
                 or _extremes([fn[g] for g in groups], alpha, power)["underpowered"])
        group_by, context = key
        for name, s in (("garbe", garbe(f, r, alpha=weight)), ("fdr", fdr(f, r, alpha=weight))):
            out.append({"metric": f"{fmr_metric}+{fnmr_metric}", "group_by": group_by, "summary": name,
                        "value": float(s.value), "n_groups": s.n_groups, "infinite": False,
                        "underpowered": bool(under), "weight": weight, **dict(context)})
    return out
