"""Whether two effects compound: the precision x capture-condition interaction, paired face by face.

Each face is seen four times: by the reference precision (fp32) and by the variant (int8), each on the
unmodified image (level 0) and under the condition (level L). With y in {0, 1} for a right decision, the face's
change under the condition is d = y(L) - y(0) for each precision, and its interaction contrast is

    D = d_variant - d_reference = (y_var(L) - y_var(0)) - (y_ref(L) - y_ref(0))      (an integer in -2..2)

The group's interaction is the mean of D over the faces decided in all four runs: the difference of the two paired
changes (a difference in differences; for a 2 x 2 within-subject design the interaction contrast, e.g. Maxwell,
Delaney & Kelley (2018), Designing Experiments and Analyzing Data, ch. 12). Negative: the variant loses more under
the condition than the reference does, i.e. int8 and the condition compound.

Test: Fisher's randomisation test for paired differences (Fisher 1935, The Design of Experiments, sec. 21;
Pitman 1937): under "no interaction", each subject's total of D is as likely to have either sign, so the exact
null distribution of the sum is that of sum(+-t_u) over the subjects' totals t_u, computed exactly by convolution
(the totals are integers). When every nonzero total is +-1 this is the exact sign test, i.e. the exact McNemar
test (precision_loss.mcnemar_exact) that --drift uses for one change. Interval: percentile bootstrap over subjects
(the faces of one person resampled together, as precision_loss.paired_deltas does; Efron & Tibshirani 1993 ch. 13).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.metrics.bootstrap import percentile_ci, resample_counts
from harness.metrics.inputs import ALL, binary_column, check_confidence, group_labels, require_columns
from harness.metrics.precision_loss import _group_rng


def sign_flip_p(totals: Sequence[int]) -> float:
    """Exact two-sided p of Fisher's randomisation test that integer unit totals are symmetric about 0:
    P(|sum of +-|t_u|| >= |sum t_u|) with each sign equally likely and independent. 1.0 when every total is 0."""
    t = np.asarray(totals, dtype=np.int64)
    if t.size and not np.array_equal(t, np.asarray(totals, dtype=float)):
        raise ValueError("sign_flip_p needs integer totals")
    mags = np.abs(t[t != 0])
    if not mags.size:
        return 1.0
    span = int(mags.sum())
    dist = np.zeros(2 * span + 1)  # index s + span: P(sum = s)
    dist[span] = 1.0
    for m in mags:
        dist = 0.5 * (np.roll(dist, m) + np.roll(dist, -m))  # no wrap: |partial sum| <= span throughout
    observed = abs(int(t.sum()))
    s = np.arange(-span, span + 1)
    return float(min(1.0, dist[np.abs(s) >= observed].sum()))


def paired_interaction(ref0: pd.DataFrame, ref_l: pd.DataFrame, var0: pd.DataFrame, var_l: pd.DataFrame, *,
                       column: str, group_by: Sequence[str], seed: int = 0, n_boot: int = 1000,
                       confidence: float = 0.95, subject_col: str = "subject") -> list[dict]:
    """Per group (and "all"): the interaction of the variant with the condition on the 0/1 column `column`
    (e.g. "correct", "det_hit"), over the faces with a decision in all four frames (joined on sample_id; group
    labels and subjects from ref0). Fields: n (faces), n_units, unit, ref_change and var_change (the two paired
    changes, level L - level 0), interaction (var_change - ref_change), ci_lo/ci_hi (subject bootstrap,
    None when no face's contrast is nonzero), p_value (exact randomisation test), and the counts of faces whose
    contrast is negative ("worse": the variant lost more) and positive."""
    what = f"paired_interaction({column})"
    check_confidence(confidence, what)
    require_columns(ref0, ["sample_id", column, *group_by], what)
    frame = ref0.copy()
    for name, df in (("ref_l", ref_l), ("var0", var0), ("var_l", var_l)):
        require_columns(df, ["sample_id", column], what)
        frame = frame.merge(df[["sample_id", column]].rename(columns={column: f"{column}__{name}"}),
                            on="sample_id", how="inner")
    _, labels = group_labels(frame, list(group_by), what)
    y = {k: binary_column(frame, c, what) for k, c in
         (("r0", column), ("rl", f"{column}__ref_l"), ("v0", f"{column}__var0"), ("vl", f"{column}__var_l"))}
    use = np.logical_and.reduce([s.notna().to_numpy() for s in y.values()])
    has_subject = subject_col in frame.columns and frame.loc[use, subject_col].notna().all()
    unit = (frame[subject_col] if has_subject else frame["sample_id"]).astype(str)
    table = pd.DataFrame({"group": labels, "unit": unit, "dr": y["rl"] - y["r0"], "dv": y["vl"] - y["v0"],
                          "n": 1.0})[use]
    table["D"] = table["dv"] - table["dr"]
    rows = []
    for group, part in [(ALL, table), *table.groupby("group", sort=True)]:
        if part.empty:
            continue
        per_unit = part.groupby("unit", sort=True)[["D", "n"]].sum()
        d_u, n_u = per_unit["D"].to_numpy(), per_unit["n"].to_numpy()
        n = float(n_u.sum())
        lo = hi = None
        if np.any(d_u != 0):
            w = resample_counts(_group_rng(seed, str(group)), len(n_u), n_boot)
            lo, hi = percentile_ci((w @ d_u) / (w @ n_u), confidence)
        rows.append({"group": str(group), "n": int(n), "n_units": int(len(n_u)),
                     "unit": "subject" if has_subject else "sample",
                     "ref_change": float(part["dr"].sum() / n), "var_change": float(part["dv"].sum() / n),
                     "interaction": float(part["D"].sum() / n), "ci_lo": lo, "ci_hi": hi,
                     "p_value": sign_flip_p(d_u.astype(np.int64)),
                     "worse": int((part["D"] < 0).sum()), "better": int((part["D"] > 0).sum())})
    return rows
