"""Pipeline sensitivity: how much of a group's gender error belongs to the face pipeline, not the model or device.

The same reference model (fp32, host CPU) classifies each face twice: once from the harness's chip and once from
the upstream chip (the model authors' own dlib pipeline, harness/upstream.py). Both predictions are of the same
image, so the comparison is paired, within-sample, exactly as a precision change is (precision_loss.py): the
accuracy difference gets the paired interval of `paired_deltas` (bootstrap, floored by Newcombe's score
interval), and the discordant pairs the exact McNemar test of `decision_flips`. Pure numpy/pandas/scipy;
formulas and references in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.metrics.inputs import ALL, binary_column, group_labels, require_columns
from harness.metrics.precision_loss import decision_flips, paired_deltas

PIPELINES = ("harness", "upstream")
# Per-sample columns, per pipeline p: p_acquired (a chip exists), p_correct (prediction == label; null without a
# chip or a label), p_male (predicted male; null without a chip), p_rect (upstream only: rectangle source).
COLUMNS = tuple(f"{p}_{c}" for p in PIPELINES for c in ("acquired", "correct", "male"))


def _side(df: pd.DataFrame, pipeline: str, group_by: Sequence[str], subject_col: str) -> pd.DataFrame:
    """One pipeline as a precision_loss-style frame: sample_id, group attributes, subject, correct."""
    keep = ["sample_id", *group_by] + ([subject_col] if subject_col in df.columns else [])
    correct = df[f"{pipeline}_correct"].where(df[f"{pipeline}_acquired"].astype(bool), None)
    return df[keep].assign(correct=correct)


def pipeline_sensitivity(
    df: pd.DataFrame,
    *,
    group_by: Sequence[str],
    seed: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
    subject_col: str = "subject",
) -> list[dict]:
    """Per group (and "all") of `group_by`: harness vs upstream gender accuracy on the same faces.

    Row fields:
      n_samples               rows of the group (every evaluated image, acquired or not)
      fta_harness/upstream    images where that pipeline made no chip (failure to acquire)
      n                       images both pipelines acquired, with a label: the paired sample
      acc_harness/upstream    accuracy over those n
      delta, ci_lo, ci_hi     acc_upstream - acc_harness with the paired bootstrap percentile interval
                              (precision_loss.paired_deltas: units resampled within the group, both sides together),
                              never narrower than Newcombe's score interval (method 10) for the n faces, so a group
                              where neither pipeline is uniquely right (b = c = 0) does not print [0, 0]
      ci_method               "paired_bootstrap", or "paired_bootstrap_floored" where the score interval set an end
      b, c, p_value           b = harness right and upstream wrong, c = harness wrong and upstream right; exact
                              two-sided McNemar p (precision_loss.mcnemar_exact, McNemar 1947)
      male_share_harness/upstream   share predicted male over the same n (a pipeline that pushes a group towards
                              one label shows here even where accuracy hides it, e.g. in a mixed-gender group)
      rects                   (upstream) how many of the group's chips came from each rectangle source
    Groups with no paired sample still get a row (n = 0, accuracies null) so their failures to acquire show.
    """
    what = "pipeline_sensitivity"
    require_columns(df, ["sample_id", *COLUMNS], what)
    gb_name, labels = group_labels(df, group_by, what)
    ref, var = _side(df, "harness", group_by, subject_col), _side(df, "upstream", group_by, subject_col)
    deltas = {r["group"]: r for r in paired_deltas(ref, var, success_col="correct", group_by=group_by, seed=seed,
                                                   n_boot=n_boot, confidence=confidence, metric="accuracy",
                                                   subject_col=subject_col)}
    flips = {r["group"]: r for r in decision_flips(ref, var, "correct", group_by)}
    h_ok = binary_column(df, "harness_acquired", what).fillna(0.0)
    u_ok = binary_column(df, "upstream_acquired", what).fillna(0.0)
    h_corr, u_corr = binary_column(ref, "correct", what), binary_column(var, "correct", what)
    table = pd.DataFrame({
        "group": labels, "fta_h": 1.0 - h_ok, "fta_u": 1.0 - u_ok, "paired": h_corr.notna() & u_corr.notna(),
        "male_h": binary_column(df, "harness_male", what), "male_u": binary_column(df, "upstream_male", what),
        "rect": df["upstream_rect"] if "upstream_rect" in df.columns else None,
    })
    rows = []
    for group, part in [(ALL, table), *table.groupby("group", sort=True)]:
        group = str(group)
        d, f = deltas.get(group), flips.get(group)
        paired = part[part["paired"]]
        rects = part["rect"].dropna().value_counts().sort_index()
        rows.append({
            "metric": "accuracy", "group_by": gb_name, "group": group, "n_samples": int(len(part)),
            "fta_harness": int(part["fta_h"].sum()), "fta_upstream": int(part["fta_u"].sum()),
            "n": int(d["n"]) if d else 0,
            "acc_harness": d["ref_value"] if d else None, "acc_upstream": d["var_value"] if d else None,
            "delta": d["delta"] if d else None, "ci_lo": d["ci_lo"] if d else None, "ci_hi": d["ci_hi"] if d else None,
            "ci_method": d["ci_method"] if d else None,
            "b": f["b"] if f else 0, "c": f["c"] if f else 0, "p_value": f["p_value"] if f else None,
            "male_share_harness": _mean(paired["male_h"]), "male_share_upstream": _mean(paired["male_u"]),
            "rects": {str(k): int(v) for k, v in rects.items()},
            "unit": d["unit"] if d else None, "n_boot": n_boot, "small": bool((d["n"] if d else 0) < 30),
        })
    return rows


def by_groupings(df: pd.DataFrame, *, groupings: Sequence[Sequence[str]], seed: int, n_boot: int = 1000,
                 confidence: float = 0.95) -> list[dict]:
    """`pipeline_sensitivity` for every grouping of the dataset card (the default first, then the card's other
    `groupings`, e.g. race*gender and skin*gender): each grouping, then each of its attributes alone when it has
    several (race; gender), every grouping once (gender, shared by race*gender and skin*gender, once), the
    overall row once. Every row says its `group_by`."""
    seen: list[tuple[str, ...]] = []
    for grouping in groupings:
        grouping = tuple(grouping)
        for gb in [grouping] + ([(g,) for g in grouping] if len(grouping) > 1 else []):
            if gb and gb not in seen:
                seen.append(gb)
    rows: list[dict] = []
    for gb in seen:
        part = pipeline_sensitivity(df, group_by=list(gb), seed=seed, n_boot=n_boot, confidence=confidence)
        rows += part if not rows else [r for r in part if r["group"] != ALL]
    return rows


def _mean(s: pd.Series) -> float | None:
    v = s.dropna().to_numpy(dtype=float)
    return float(np.mean(v)) if v.size else None
