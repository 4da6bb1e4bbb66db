"""What a lower precision (or another target) costs each group, against the reference (fp32 on the reference target).

Reference and variant are paired by sample_id, so every comparison is within-sample: the same face through
two variants. That pairing is what makes small per-group changes measurable at all.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from harness.errors import InputError
from harness.metrics.bootstrap import percentile_ci, resample_counts
from harness.metrics.disparity import RATE_ROW_FIELDS
from harness.metrics.inputs import (
    ALL, DUPLICATE_SAMPLE_ID, NO_SAMPLE_ID, as_2d_float, binary_column, check_confidence, group_labels,
    require_columns, same_length,
)
from harness.metrics.rates import paired_difference_interval
from harness.metrics.verification import PairScores, per_group_error_rates, threshold_at_fmr

# Metrics where a larger value is worse: their worst-group retention is the largest ratio, not the smallest.
LOWER_IS_BETTER = frozenset({"fmr", "fnmr", "fmr_cross", "fta", "eye_err"})


def _paired(ref_df: pd.DataFrame, var_df: pd.DataFrame, column: str, group_by: Sequence[str], what: str):
    """Inner join on sample_id of a binary column from both sides, with group labels from the reference.

    Returns (paired frame, group_by name, group labels, reference values, variant values, mask of samples
    non-null on both sides).
    """
    require_columns(ref_df, [column, *group_by], f"{what} (reference)")
    for name, df in (("reference", ref_df), ("variant", var_df)):
        if "sample_id" not in df.columns:
            raise InputError(NO_SAMPLE_ID.format(what=f"{what} ({name})"))
        dup = df["sample_id"][df["sample_id"].duplicated()]
        if not dup.empty:
            raise InputError(DUPLICATE_SAMPLE_ID.format(what=f"{what} ({name})", sample_id=dup.iloc[0]))
    require_columns(var_df, [column], f"{what} (variant)")
    paired = ref_df.merge(var_df[["sample_id", column]], on="sample_id", how="inner", suffixes=("_ref", "_var"))
    gb_name, labels = group_labels(paired, group_by, what)
    r = binary_column(paired, f"{column}_ref", what)
    v = binary_column(paired, f"{column}_var", what)
    return paired, gb_name, labels, r, v, r.notna() & v.notna()


def _group_rng(seed: int, group: str) -> np.random.Generator:
    """One stream per group, so adding or dropping a group leaves the other groups' intervals unchanged."""
    return np.random.default_rng([seed, zlib.crc32(group.encode())])


def paired_deltas(
    ref_df: pd.DataFrame,
    var_df: pd.DataFrame,
    *,
    success_col: str,
    group_by: Sequence[str],
    seed: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
    metric: str | None = None,
    subject_col: str = "subject",
) -> list[dict]:
    """Per-group change of a success rate, delta = variant - reference, with a paired bootstrap percentile CI.

    Samples present in both runs with a non-null success in both are used ("n"); "excluded" counts paired samples
    with a null on either side, "unpaired" (on the "all" row) samples in only one run. Resampling unit: the
    subject when `subject_col` is present and filled for every used sample (images of a person are not
    independent), else the sample; units are resampled within each group, both variants together, so the CI is
    the paired one. A resample: delta* = (sum w_u v_u - sum w_u r_u) / sum w_u n_u over units u with
    multiplicities w. Reference: Efron & Tibshirani (1993), An Introduction to the Bootstrap, ch. 13.
    The interval is never narrower than Newcombe's score interval for the paired samples (method 10,
    rates.paired_difference_interval): when no sample changes (b = c = 0) or every one changes alike, every
    resample gives the same delta and the bootstrap alone would print [0, 0]. "ci_method" is "paired_bootstrap",
    or "paired_bootstrap_floored" where the score interval moved an end.
    """
    metric = metric or success_col
    what = f"paired_deltas({metric})"
    check_confidence(confidence, what)
    paired, gb_name, labels, r, v, use = _paired(ref_df, var_df, success_col, group_by, what)
    has_subject = subject_col in paired.columns and paired.loc[use, subject_col].notna().all()
    unit = paired[subject_col].astype(str) if has_subject else paired["sample_id"].astype(str)
    table = pd.DataFrame({"group": labels, "unit": unit, "r": r, "v": v, "n": 1.0})[use]
    unpaired = len(ref_df) + len(var_df) - 2 * len(paired)

    rows = []
    scopes = [(ALL, table, (~use).sum())] + [
        (g, part, int((~use & (labels == g)).sum())) for g, part in table.groupby("group", sort=True)
    ]
    for group, part, excluded in scopes:
        if part.empty:
            continue
        per_unit = part.groupby("unit", sort=True)[["r", "v", "n"]].sum().to_numpy()
        rk, vk, nk = per_unit[:, 0], per_unit[:, 1], per_unit[:, 2]
        rng = _group_rng(seed, str(group))
        w = resample_counts(rng, len(nk), n_boot)
        lo, hi = percentile_ci((w @ vk - w @ rk) / (w @ nk), confidence)
        lo, hi, method = _floored_delta_interval(lo, hi, part["r"].to_numpy(), part["v"].to_numpy(), confidence)
        row = {
            "metric": metric, "group_by": gb_name, "group": str(group), "n": int(nk.sum()),
            "ref_value": float(rk.sum() / nk.sum()), "var_value": float(vk.sum() / nk.sum()),
            "delta": float((vk.sum() - rk.sum()) / nk.sum()), "ci_lo": lo, "ci_hi": hi, "ci_method": method,
            "unit": "subject" if has_subject else "sample", "n_units": int(len(nk)), "excluded": int(excluded),
            "n_boot": n_boot, "small": bool(nk.sum() < 30),
        }
        if group == ALL:
            row["unpaired"] = int(unpaired)
        rows.append(row)
    return rows


def _floored_delta_interval(lo: float | None, hi: float | None, r: np.ndarray, v: np.ndarray,
                            confidence: float) -> tuple[float, float, str]:
    """The bootstrap interval (lo, hi) of delta = mean(v) - mean(r), widened to contain Newcombe's method-10 score
    interval of the paired 0/1 samples r, v (reference, variant)."""
    r, v = r.astype(bool), v.astype(bool)
    a, b, c = int((r & v).sum()), int((r & ~v).sum()), int((~r & v).sum())
    s_lo, s_hi = paired_difference_interval(a, b, c, int(r.size) - a - b - c, confidence)
    if lo is None or hi is None:
        return s_lo, s_hi, "paired_bootstrap_floored"
    new_lo, new_hi = min(lo, s_lo), max(hi, s_hi)
    return new_lo, new_hi, "paired_bootstrap_floored" if (new_lo, new_hi) != (lo, hi) else "paired_bootstrap"


def _key(row: dict) -> tuple:
    context = tuple(sorted((k, v) for k, v in row.items() if k not in RATE_ROW_FIELDS))
    return row["metric"], row["group_by"], context


def retention(ref_rows: Iterable[dict], var_rows: Iterable[dict]) -> list[dict]:
    """Each group's variant value over its own reference value (MLPerf's "99% of fp32", applied per group).

    Rows matched on (metric, group_by, group, context such as threshold); one row per matched group with
    "retention" (null when the reference value is 0 or null), then per (metric, group_by, context) a row with
    group "worst": the smallest retention over groups ("all" excluded), or the largest for metrics in
    LOWER_IS_BETTER (error rates, where a ratio above 1 is the loss), naming "worst_group".
    MLPerf Inference rules: https://github.com/mlcommons/inference_policies (accuracy targets, e.g. 99% of fp32).
    """
    ref = {(*_key(r), r["group"]): r for r in ref_rows}
    out: list[dict] = []
    by_key: dict[tuple, list[dict]] = {}
    for row in var_rows:
        key = (*_key(row), row["group"])
        if key not in ref:
            continue
        rv, vv = ref[key]["value"], row["value"]
        ret = vv / rv if (rv not in (None, 0) and vv is not None) else None
        item = {"metric": row["metric"], "group_by": row["group_by"], "group": row["group"],
                "ref_value": rv, "var_value": vv, "retention": ret, **dict(key[2])}
        out.append(item)
        if row["group"] != ALL and ret is not None:
            by_key.setdefault(key[:3], []).append(item)
    for (metric, group_by, context), items in by_key.items():
        pick = max if metric in LOWER_IS_BETTER else min
        worst = pick(items, key=lambda it: (it["retention"], it["group"]))
        out.append({"metric": metric, "group_by": group_by, "group": "worst", "worst_group": worst["group"],
                    "ref_value": worst["ref_value"], "var_value": worst["var_value"],
                    "retention": worst["retention"], **dict(context)})
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p: binomial test of min(b, c) successes in b + c trials at p = 0.5 (1.0 if b+c = 0).

    McNemar, Q. (1947) Psychometrika 12:153-157; the exact (binomial) form as in Agresti (2013), Categorical
    Data Analysis, sec. 11.1. Only discordant pairs carry information about a change.
    """
    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)


def decision_flips(
    ref_df: pd.DataFrame, var_df: pd.DataFrame, decision_col: str, group_by: Sequence[str]
) -> list[dict]:
    """Per group: n paired samples, flips, b (reference right, variant wrong), c (reference wrong, variant right),
    and the exact McNemar p for "the variant changes the error rate". `decision_col` holds correctness
    (e.g. "correct", "det_hit"); samples null on either side are left out.
    """
    what = f"decision_flips({decision_col})"
    paired, gb_name, labels, r, v, use = _paired(ref_df, var_df, decision_col, group_by, what)
    table = pd.DataFrame({"group": labels, "b": (r == 1) & (v == 0), "c": (r == 0) & (v == 1), "n": 1})[use]
    scopes = [(ALL, table)] + list(table.groupby("group", sort=True))
    rows = []
    for group, part in scopes:
        n, b, c = int(part["n"].sum()), int(part["b"].sum()), int(part["c"].sum())
        if n == 0:
            continue
        rows.append({"metric": decision_col, "group_by": gb_name, "group": str(group), "n": n, "flips": b + c,
                     "b": b, "c": c, "flip_rate": (b + c) / n, "p_value": mcnemar_exact(b, c)})
    return rows


def embedding_drift(
    ref_emb: np.ndarray, var_emb: np.ndarray, groups: Sequence, *, group_by: str = "group"
) -> list[dict]:
    """Per group (and "all"): cosine between the reference and variant embedding of the same face, row by row.

    Rows must be aligned (same sample order); rows not finite in either matrix (no face) are left out.
    Fields: n, mean, p5 (5th percentile, linear interpolation), min. fp16 should sit near 1.0; int8 shows here
    first, before any decision changes.
    """
    ref, var = as_2d_float(ref_emb, "embedding_drift"), as_2d_float(var_emb, "embedding_drift")
    same_length("embedding_drift", ref_emb=ref, var_emb=var, groups=groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (ref * var).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(var, axis=1))
    table = pd.DataFrame({"group": pd.Series(groups, dtype=object).astype(str), "cos": cos})
    table = table[np.isfinite(table["cos"])]
    rows = []
    for group, part in [(ALL, table), *table.groupby("group", sort=True)]:
        c = part["cos"].to_numpy(dtype=float)
        if c.size:
            rows.append({"metric": "embedding_cosine", "group_by": group_by, "group": str(group), "n": int(c.size),
                         "mean": float(c.mean()), "p5": float(np.percentile(c, 5)), "min": float(c.min())})
    return rows


def threshold_transfer(
    ref_threshold: float, var_scores: PairScores, *, target_fmr: float = 1e-3, confidence: float = 0.95,
    n_boot: int = 1000, seed: int = 0,
) -> list[dict]:
    """Per-group FMR and FNMR of the variant at the reference threshold, unchanged (what a deployment that swaps
    in the quantised model without re-tuning gets), beside those at a threshold re-tuned on the variant's own
    impostors to the same overall FMR (`target_fmr`, the one the reference threshold was tuned to).
    Values and intervals are per_group_error_rates' subject-weighted ones; rates that are not computable (no
    genuine or no impostor pair) are left out.
    """
    var_threshold = threshold_at_fmr(var_scores, target_fmr)
    kw = {"confidence": confidence, "n_boot": n_boot, "seed": seed}
    at_ref = per_group_error_rates(var_scores, threshold=ref_threshold, **kw)
    at_var = per_group_error_rates(var_scores, threshold=var_threshold, target_fmr=target_fmr, **kw)
    retuned = {(r["metric"], r["group"]): r for r in at_var}
    rows = []
    for r in at_ref:
        if r["metric"] not in ("fmr", "fnmr") or r["value"] is None:
            continue
        t = retuned[(r["metric"], r["group"])]
        rows.append({
            "metric": r["metric"], "group_by": r["group_by"], "group": r["group"], "n": r["n"],
            "n_units": r["n_units"], "ref_threshold": float(ref_threshold), "var_threshold": var_threshold,
            "target_fmr": target_fmr,
            "value_at_ref_threshold": r["value"], "ci_lo_at_ref_threshold": r["ci_lo"],
            "ci_hi_at_ref_threshold": r["ci_hi"], "value_at_var_threshold": t["value"],
            "change": r["value"] - t["value"],
        })
    return rows


def _pair_flips(ref: PairScores, var: PairScores, threshold: float) -> dict[tuple[str, object], tuple[int, int]]:
    """(b, c) per cell of `_cells`: b pairs the variant newly gets wrong, c pairs it newly gets right, at
    `threshold`. Genuine pair wrong: score <= threshold (a false non-match); impostor wrong: score > threshold."""
    groups_of_genuine = ref.subject_group[ref.genuine_subject]
    r_fn, v_fn = ref.genuine <= threshold, var.genuine <= threshold
    out: dict[tuple[str, object], tuple[int, int]] = {}
    nb, nc = (r_fn == 0) & v_fn, r_fn & ~v_fn
    out[("fnmr", ALL)] = (int(nb.sum()), int(nc.sum()))
    for g in range(len(ref.groups)):
        in_g = groups_of_genuine == g
        out[("fnmr", g)] = (int((nb & in_g).sum()), int((nc & in_g).sum()))
    tot_b = tot_c = 0
    for key, r_scores in ref.impostor.items():
        r_fm, v_fm = r_scores > threshold, var.impostor[key] > threshold
        b, c = int((~r_fm & v_fm).sum()), int((r_fm & ~v_fm).sum())
        tot_b, tot_c = tot_b + b, tot_c + c
        if key[0] == key[1]:
            out[("fmr", key[0])] = (b, c)
    out[("fmr", ALL)] = (tot_b, tot_c)
    return out


def same_pairs(ref: PairScores, var: PairScores) -> bool:
    """True when two PairScores hold the same comparisons in the same order (built from the same samples with the
    same labels), so their scores can be compared pair by pair."""
    return (ref.groups == var.groups and np.array_equal(ref.subjects, var.subjects)
            and np.array_equal(ref.genuine_subject, var.genuine_subject)
            and ref.impostor.keys() == var.impostor.keys()
            and all(np.array_equal(ref.impostor_pairs[k], var.impostor_pairs[k]) for k in ref.impostor))


def paired_error_rates(
    ref_scores: PairScores, var_scores: PairScores, threshold: float, *, target_fmr: float | None = None,
    confidence: float = 0.95, n_boot: int = 1000, seed: int = 0, small_n: int = 30,
) -> list[dict]:
    """Per group, the variant's FMR and FNMR at the reference (fp32-tuned) threshold against the reference's own,
    over the same comparisons: ratio var/ref and difference var - ref, each with a paired subject-bootstrap
    interval (every resample draws subjects once and scores both variants on them, so between-subject variation
    cancels out of the comparison; Efron & Tibshirani 1993, ch. 13; the subject as the unit as in
    harness.metrics.verification). "p_value": the two-sided bootstrap p of the difference, 2 x the smaller share
    of resamples on either side of 0 (Efron & Tibshirani 1993, ch. 16), floored at 1/n_boot. "b"/"c": pairs the
    variant newly gets wrong / right (for the record: pairs share subjects, so an exact McNemar test over them
    would overstate the evidence, which is why the verdict uses the subject bootstrap).

    Both PairScores must come from the same samples (same_pairs); InputError otherwise. Rates are the subject-
    weighted ones of per_group_error_rates; a ratio whose reference value is 0 is null (the difference stays).
    """
    check_confidence(confidence, "paired_error_rates")
    if not same_pairs(ref_scores, var_scores):
        raise InputError("paired_error_rates: reference and variant scores do not cover the same comparisons")
    from harness.metrics.verification import _cells, _Estimator

    ref_est, var_est = _Estimator(ref_scores, threshold), _Estimator(var_scores, threshold)
    n_subj = ref_scores.subjects.size
    rng = np.random.default_rng([seed, 22])
    per_chunk = max(1, 2_000_000 // max(n_subj, 1))
    boot_r: dict[tuple[str, object], list[np.ndarray]] = {}
    boot_v: dict[tuple[str, object], list[np.ndarray]] = {}
    for start in range(0, n_boot, per_chunk):
        w = resample_counts(rng, n_subj, min(per_chunk, n_boot - start))
        for store, est in ((boot_r, ref_est), (boot_v, var_est)):
            for key, v in est.rates(w).items():
                store.setdefault(key, []).append(v)
    one = np.ones((1, n_subj))
    ref_point, var_point = ref_est.rates(one), var_est.rates(one)
    flips = _pair_flips(ref_scores, var_scores, threshold)
    rows = []
    for key, cell in _cells(ref_scores, threshold):
        if cell.metric not in ("fmr", "fnmr") or cell.n == 0:
            continue
        rv, vv = float(ref_point[key][0]), float(var_point[key][0])
        r, v = np.concatenate(boot_r[key]), np.concatenate(boot_v[key])
        ok = np.isfinite(r) & np.isfinite(v)
        d = v[ok] - r[ok]
        lo, hi = percentile_ci(d, confidence)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio_boot = np.where(r[ok] > 0, v[ok] / r[ok], np.nan)
        rlo, rhi = percentile_ci(ratio_boot, confidence) if rv > 0 else (None, None)
        p = (min(1.0, max(2 * min((d <= 0).mean(), (d >= 0).mean()), 1.0 / max(d.size, 1))) if d.size else None)
        if d.size and not (d != 0).any():
            p = 1.0  # no resample moved: nothing changed
        b, c = flips[key]
        rows.append({
            "metric": cell.metric, "group_by": ref_scores.group_by, "group": cell.group, "n": cell.n,
            "n_units": cell.n_units, "n_subjects": int(cell.members.sum()), "threshold": float(threshold),
            "threshold_kind": "tuned", "target_fmr": target_fmr, "ref_value": rv, "var_value": vv,
            "ref_k": cell.k, "var_k": cell.k + b - c,
            "ratio": vv / rv if rv > 0 else None, "ratio_ci_lo": rlo, "ratio_ci_hi": rhi,
            "delta": vv - rv, "ci_lo": lo, "ci_hi": hi, "p_value": p, "b": b, "c": c,
            "test": "paired subject bootstrap", "ci_method": "paired_subject_bootstrap", "n_boot": n_boot,
            "n_valid": int(ok.sum()), "small": bool(cell.n_units < small_n),
        })
    return rows
