"""Whether a group's error gap remains after conditioning on face-image quality.

Wu et al. (2023, "Face recognition accuracy across demographics: shining a light into the problem") show that
face-region brightness, not group membership alone, drives error. The question here: within faces of similar
quality, does a group still err more than the reference group? Faces are cut into quality bins on the pooled
distribution (tertiles of the quality measure, by default median skin luma `q_brightness`, harness/camera/quality.py),
so every group is compared with the reference group inside the same bins. Per bin, a 2 x 2 table (group / reference
group x error / right); over the bins:

- the Mantel-Haenszel pooled odds ratio of an error, group against reference (Mantel & Haenszel 1959, J. Natl.
  Cancer Inst. 22:719), with the Robins-Breslow-Greenland variance of its log for the 95% interval (Robins,
  Breslow & Greenland 1986, Biometrics 42:311);
- the Cochran-Mantel-Haenszel test that the common odds ratio is 1 (with continuity correction);
- the Breslow-Day test that the odds ratio is the same in every bin (Breslow & Day 1980, IARC Sci. Publ. 32, sec.
  4.4), whether the gap depends on quality;
- beside it the crude (unstratified) odds ratio of the same faces with its Woolf interval: a crude ratio far from 1
  and a pooled one near 1 means the gap is explained by quality; both away from 1, the gap remains.

All four are statsmodels' (statsmodels.stats.contingency_tables.StratifiedTable and Table2x2). The unit is the face,
so faces must be independent: a frame with several faces of one subject is not analysed (the rows say so), since
the Mantel-Haenszel variance would then be too small (subject weighting, as everywhere in this harness, would need
a cluster-robust estimator). Bins where either group has no face carry no information and are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.metrics.inputs import binary_column, group_labels

DEFAULT_QUALITY = "q_brightness"
DEFAULT_BINS = 3
OTHERS = "the other groups"  # the default reference: every face not in the group


def quality_bins(values: pd.Series, bins: int = DEFAULT_BINS) -> tuple[pd.Series, list[float]]:
    """Quantile bins of the pooled quality values (NaN stays NaN): (bin index per row, the bin edges)."""
    v = pd.to_numeric(values, errors="coerce")
    cut, edges = pd.qcut(v, bins, labels=False, retbins=True, duplicates="drop")
    return cut, [float(e) for e in edges]


def stratified_gap(df: pd.DataFrame, *, success_col: str, group_by: Sequence[str], quality_col: str = DEFAULT_QUALITY,
                   bins: int = DEFAULT_BINS, reference_group: str | None = None,
                   subject_col: str = "subject") -> dict:
    """Each group's odds of an error against `reference_group` (default: the faces of all other groups), crude
    and pooled over quality bins. Returns {"quality", "bins", "edges", "reference_group", "rows",
    "reason"}; rows: group, n, errors, ref_n, ref_errors, crude_or (+ ci), mh_or (+ ci), p_cmh, p_homogeneity,
    bins_used. A group with no error and a reference with none give None ratios with a reason."""
    from statsmodels.stats.contingency_tables import StratifiedTable, Table2x2

    out = {"quality": quality_col.removeprefix("q_"), "bins": bins, "edges": [], "reference_group": None, "rows": [],
           "reason": None}
    if quality_col not in df or success_col not in df:
        out["reason"] = f"not computed: no {quality_col.removeprefix('q_')} recorded per face"
        return out
    _, labels = group_labels(df, group_by, "stratified_gap")
    ok = binary_column(df, success_col, "stratified_gap")
    frame = pd.DataFrame({"group": labels, "error": 1.0 - ok,
                          "q": pd.to_numeric(df[quality_col], errors="coerce")}).dropna()
    if subject_col in df:
        subjects = df.loc[frame.index, subject_col]
        if subjects.notna().all() and subjects.duplicated().any():
            out["reason"] = ("not computed: some subjects have several faces here, and the Mantel-Haenszel "
                             "variance assumes independent faces")
            return out
    if frame.empty:
        out["reason"] = "no face with both a decision and a quality measure"
        return out
    frame["bin"], out["edges"] = quality_bins(frame["q"], bins)
    groups = sorted(frame["group"].unique())
    out["reference_group"] = OTHERS if reference_group is None else reference_group
    for group in (g for g in groups if g != reference_group):
        in_ref = frame["group"] != group if reference_group is None else frame["group"] == reference_group
        sub = frame[(frame["group"] == group) | in_ref]
        is_g = (sub["group"] == group).to_numpy()
        err = sub["error"].to_numpy() > 0.5
        tables = []
        for b in sorted(sub["bin"].unique()):
            m = (sub["bin"] == b).to_numpy()
            t = np.array([[np.sum(m & is_g & err), np.sum(m & is_g & ~err)],
                          [np.sum(m & ~is_g & err), np.sum(m & ~is_g & ~err)]], dtype=float)
            if t[0].sum() and t[1].sum():
                tables.append(t)
        row = {"group": group, "n": int(is_g.sum()), "errors": int((is_g & err).sum()),
               "ref_n": int((~is_g).sum()), "ref_errors": int((~is_g & err).sum()), "bins_used": len(tables),
               "crude_or": None, "crude_ci": None, "mh_or": None, "mh_ci": None, "p_cmh": None,
               "p_homogeneity": None, "reason": None}
        pooled = np.array([[row["errors"], row["n"] - row["errors"]],
                           [row["ref_errors"], row["ref_n"] - row["ref_errors"]]], dtype=float)
        if not tables:
            row["reason"] = "no quality bin holds faces of both groups"
        elif pooled[:, 0].sum() == 0 or pooled[:, 1].sum() == 0:
            row["reason"] = "no error in either group" if pooled[:, 0].sum() == 0 else "every face an error"
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                if (pooled > 0).all():
                    t2 = Table2x2(pooled)
                    row["crude_or"], row["crude_ci"] = float(t2.oddsratio), [float(x) for x in t2.oddsratio_confint()]
                st = StratifiedTable(tables)
                num = sum(t[0, 0] * t[1, 1] / t.sum() for t in tables)
                den = sum(t[0, 1] * t[1, 0] / t.sum() for t in tables)
                if num > 0 and den > 0:
                    row["mh_or"] = float(st.oddsratio_pooled)
                    row["mh_ci"] = [float(x) for x in st.oddsratio_pooled_confint()]
                    if len(tables) > 1:
                        row["p_homogeneity"] = _finite(st.test_equal_odds().pvalue)
                else:
                    row["reason"] = "pooled odds ratio is 0 or infinite (an empty cell in every bin)"
                row["p_cmh"] = _finite(st.test_null_odds(correction=True).pvalue)
        out["rows"].append(row)
    return out


def _finite(p) -> float | None:
    p = float(p)
    return p if np.isfinite(p) else None
