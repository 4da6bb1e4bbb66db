"""Whether a change in a rate trend between two nights is more than noise (`bench trend`, harness/report/trend.py).

Nightly runs of one board score the same faces, so a change of a rate between two runs is tested on the runs'
per-sample decisions, paired: the exact McNemar test (McNemar 1947; harness.metrics.precision_loss.mcnemar_exact,
through decision_flips, as `bench compare --drift` uses it) over the faces (accuracy: gender's "correct",
detection's "det_hit") or the comparison pairs (FMR/FNMR at the fp32 threshold each run inherits; pairs built by
harness.metrics.cross_isa.pair_decisions). b counts the faces or pairs the later run newly gets wrong, c those it
newly gets right; only these discordant ones carry information about a change. A rate step of 20 -> 23.5 errors
(+17.5%) made of faces flipping both ways is therefore noise, and a step made of new errors alone is not.

Comparison pairs share subjects, so the McNemar p over pairs can overstate the evidence for FMR/FNMR (the
buyer's page uses a subject bootstrap for that reason, harness.metrics.precision_loss.paired_error_rates); the
note names the unit so a reader can weigh it.

Two runs that did not score the same thing (other data set manifest or --limit subset, other chips, another pack:
harness.report.drift.refusal) cannot be paired; their change is tested unpaired, with Fisher's exact test of the
2x2 table errors / not-errors x run (Fisher 1935; Agresti 2013, Categorical Data Analysis, sec. 3.5; scipy's
fisher_exact), and the note says so and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from harness.errors import UsageError
from harness.metrics.cross_isa import _matrix, pair_decisions
from harness.metrics.precision_loss import decision_flips
from harness.report.drift import refusal
from harness.report.summary import summarize, verification_group_rows
from harness.results.store import Run

ALPHA = 0.05
# Trend metric -> what its value counts: the per-sample decisions a change of it is tested on.
TESTED_METRICS = ("accuracy", "fmr_at_reference_threshold", "fmr_per_group", "fnmr_per_group")
DECISION_COLUMN = {"gender": "correct", "detection": "det_hit"}


def check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha must lie strictly between 0 and 1, not {alpha}")
    return alpha


@dataclass
class ChangeTest:
    """One change between run_before and run_after, tested. test: "mcnemar" (paired) or "fisher" (unpaired)."""
    test: str
    unit: str  # "face" or "comparison pair"
    p: float
    alpha: float
    run_before: str
    run_after: str
    n: int | None = None  # mcnemar: samples paired
    b: int | None = None  # mcnemar: newly wrong in run_after
    c: int | None = None  # mcnemar: newly right in run_after
    k_before: int | None = None  # fisher: errors / samples on each side
    n_before: int | None = None
    k_after: int | None = None
    n_after: int | None = None
    unpaired_because: str | None = None

    @property
    def flagged(self) -> bool:
        return self.p < self.alpha

    def text(self) -> str:
        verdict = f"p={self.p:.2g} {'<' if self.flagged else '>='} {self.alpha:g}"
        if self.test == "mcnemar":
            return f"exact McNemar, paired by {self.unit}: n={self.n} b={self.b} c={self.c} {verdict}"
        return (f"Fisher exact, unpaired ({self.unpaired_because}): errors {self.k_before}/{self.n_before} -> "
                f"{self.k_after}/{self.n_after} {verdict}")

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        return d | {"flagged": self.flagged}


class ChangeTester:
    """Tests the change of one series' rate between two runs; per-run decisions are built once and reused for
    every group of a run pair."""

    def __init__(self, runs: list[Run], metric: str, alpha: float = ALPHA):
        if metric not in TESTED_METRICS:
            raise UsageError(f"trend metric '{metric}' has no per-sample test; tested: {', '.join(TESTED_METRICS)}")
        self.runs = {r.run_id: r for r in runs}
        self.metric = metric
        self.alpha = check_alpha(alpha)
        self._cache: dict[tuple, Any] = {}

    def test(self, run_before: str, run_after: str, entry: str, group: str | None) -> ChangeTest | None:
        """The change of `entry`'s rate (of `group`, or overall) from run_before to run_after, or None when the
        runs hold no per-sample decisions for it."""
        a, b = self.runs[run_before], self.runs[run_after]
        why = refusal(a, b, entries=[entry])
        sides = self._sides(a, b, entry, paired=why is None)
        if sides is None:
            return None
        da, db, unit = sides
        da, db = self._population(da, group), self._population(db, group)
        if da.empty or db.empty:
            return None
        base = {"unit": unit, "alpha": self.alpha, "run_before": run_before, "run_after": run_after}
        if why is None:
            row = next(r for r in decision_flips(da, db, "correct", ["group"]) if r["group"] == "all")
            return ChangeTest("mcnemar", p=row["p_value"], n=row["n"], b=row["b"], c=row["c"], **base)
        ka, kb = int((~da["correct"]).sum()), int((~db["correct"]).sum())
        na, nb = len(da), len(db)
        p = float(fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue)
        return ChangeTest("fisher", p=p, k_before=ka, n_before=na, k_after=kb, n_after=nb,
                          unpaired_because=why.removeprefix("--drift: "), **base)

    def _population(self, d: pd.DataFrame, group: str | None) -> pd.DataFrame:
        """The decisions the metric's value counts: impostor pairs (FMR) or genuine pairs (FNMR) of the group,
        every pair for the overall FMR; faces for accuracy."""
        if self.metric == "accuracy":
            return d
        genuine = self.metric == "fnmr_per_group"
        d = d[d["genuine"] == genuine]
        return d if group is None else d[d["group"] == group]

    def _sides(self, a: Run, b: Run, entry: str, *, paired: bool):
        key = (a.run_id, b.run_id, entry, paired)
        if key not in self._cache:
            self._cache[key] = self._build(a, b, entry, paired)
        return self._cache[key]

    def _build(self, a: Run, b: Run, entry: str, paired: bool):
        frames = [self._frame(r, entry) for r in (a, b)]
        if any(f is None for f in frames):
            return None
        (fa, ta, col, gb), (fb, tb, _, _) = frames
        if col != "embedding":  # faces: one decision each
            sides = [f[["sample_id", col]].dropna() for f in (fa, fb)]
            return (*(d.assign(correct=d[col].astype(bool), group="-")[["sample_id", "group", "correct"]]
                      for d in sides), "face")
        if paired:  # the same faces in one order on both sides, so pair "i-j" is the same comparison
            m = fa.merge(fb[["sample_id", "embedding"]], on="sample_id", suffixes=("_a", "_b"))
            sides = [_pairs(m, "embedding_a", gb, ta), _pairs(m, "embedding_b", gb, tb)]
        else:
            sides = [_pairs(fa, "embedding", gb, ta), _pairs(fb, "embedding", gb, tb)]
        return None if any(d is None for d in sides) else (*sides, "comparison pair")

    def _frame(self, run: Run, entry_id: str):
        """(per-sample frame of the headline data set, threshold, decision column, group_by) or None."""
        from harness.scoring import samples_frame

        entry = next((e for e in run.entries if e.get("entry") == entry_id), None)
        if entry is None or entry.get("status") != "ok":
            return None
        task = entry.get("task")
        if task == "verification":
            dataset, by = verification_group_rows(run, entry)
            row = (by.get("all") or {}).get("fmr")
            if row is None or row.get("threshold") is None:
                return None
            threshold, gb = float(row["threshold"]), str(row["group_by"]).split("*")
            col = "embedding"
        elif task in DECISION_COLUMN:
            dataset, threshold, gb, col = summarize(run, entry).dataset, None, [], DECISION_COLUMN[task]
        else:
            return None
        df = samples_frame(run.samples(entry_id))
        if df.empty or col not in df.columns:
            return None
        if dataset is not None and "dataset" in df.columns:
            df = df[df["dataset"] == dataset]
        if "status" in df.columns:
            df = df[df["status"] == "ok"]
        if col == "embedding":
            if not set(gb) <= set(df.columns) or "subject" not in df.columns:
                return None
            df = df[df["embedding"].map(lambda e: isinstance(e, (list, np.ndarray)))]
        return df.reset_index(drop=True), threshold, col, gb


def _pairs(df: pd.DataFrame, emb_col: str, group_by: list[str], threshold: float) -> pd.DataFrame | None:
    """Every comparison pair of the frame's faces decided at `threshold` (cross_isa.pair_decisions), None for
    fewer than two faces."""
    if len(df) < 2:
        return None
    groups = df[group_by].astype(str).agg("*".join, axis=1).to_numpy()
    return pair_decisions(_matrix(df[emb_col]), df["subject"].astype(str).to_numpy(), groups, threshold)
