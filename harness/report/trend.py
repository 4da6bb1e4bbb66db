"""Trends over nightly runs: one series per board (target) and entry (and group, for fmr_per_group), with change
points flagged.

Step detection follows the model of asv (airspeed velocity, asv/step_detect.py): the series is taken as piecewise
constant plus noise and fitted by the L1 Potts problem

    argmin over k, breakpoints, levels of  sum_i |y_i - mu(i)| + gamma * k

(asv after Friedrich et al. 2008, "Complexity penalized M-estimation", J. Comput. Graph. Stat. 17:201-224).
The L1 cost keeps one bad night from being read as a step. Here the problem is solved exactly by PELT (Killick,
Fearnhead & Eckley 2012) from the `ruptures` library (model "l1"), with gamma = GAMMA * sigma * ln(n), sigma a
robust noise scale from successive differences (1.4826 * MAD / sqrt(2), not inflated by the steps themselves),
so the penalty scales with the data as asv's does. Like asv's `regressions_thresholds` (default 5%), a step is
a candidate only when the levels on its two sides differ by at least MIN_STEP relative to the earlier level.

A latency (p90_ms) or retention (a ratio of two rates) candidate is flagged by that rule alone. A rate's candidate
(accuracy, FMR, FNMR) is flagged only when its test says so: the change between the two runs either side of it,
and between the newest night and the one before, is tested on the runs' per-sample decisions with the paired exact
McNemar test, or unpaired with Fisher's exact test where the runs did not score the same thing
(harness/report/change_test.py), at p < alpha. A candidate the test does not support is kept as `noise`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from harness.errors import UnavailableError, UsageError
from harness.report.change_test import ALPHA, TESTED_METRICS, ChangeTest, ChangeTester
from harness.report.summary import summarize, verification_group_rows
from harness.results.store import Run

METRICS = ("p90_ms", "worst_group_retention", "accuracy", "fmr_at_reference_threshold", "fmr_per_group",
           "fnmr_per_group")
PER_GROUP = {"fmr_per_group": "fmr", "fnmr_per_group": "fnmr"}
GAMMA = 3.0
MIN_STEP = 0.05


def metric_value(run: Run, entry: dict[str, Any], metric: str) -> float | None:
    """p90_ms: single-stream p90; worst_group_retention: the lowest per-group variant/fp32 ratio of the headline
    metric (summary.worst_retention); fmr_at_reference_threshold: a verification entry's overall same-group FMR at
    the fp32-tuned threshold it inherits (the headline FMR row), None for other tasks; accuracy: the headline share
    of faces decided right (gender accuracy, detection recall), None for verification."""
    if entry.get("status") != "ok":
        return None
    s = summarize(run, entry)
    if metric == "p90_ms":
        return s.p90_ms
    if metric == "worst_group_retention":
        return s.worst_retention
    if metric == "fmr_at_reference_threshold":
        return s.overall if s.metric == "fmr" else None
    if metric == "accuracy":
        return s.overall if entry.get("task") in ("gender", "detection") else None
    if metric in PER_GROUP:
        raise UsageError(f"{metric} has one value per group: use group_values")
    raise UsageError(f"unknown trend metric '{metric}'; valid: {', '.join(METRICS)}")


def group_values(run: Run, entry: dict[str, Any], rate: str = "fmr") -> dict[str, float]:
    """fmr_per_group (rate "fmr") / fnmr_per_group ("fnmr"): a verification entry's same-group FMR (or FNMR) per
    group at the fp32-tuned threshold it inherits, on the headline data set's default grouping (the rows the
    buyer's page shows); {} for other tasks."""
    if entry.get("status") != "ok" or entry.get("task") != "verification":
        return {}
    _, by = verification_group_rows(run, entry)
    return {g: float(m[rate]["value"]) for g, m in by.items()
            if g != "all" and m.get(rate) and m[rate].get("value") is not None}


@dataclass
class Step:
    index: int  # first point of the new level
    run_id: str
    before: float
    after: float
    test: ChangeTest | None = None  # a rate's test of the change (None: latency/retention, asv's rule alone)
    newest: bool = False  # the newest night against the one before, not a change point

    @property
    def flagged(self) -> bool:
        return self.test is None or self.test.flagged

    def rule(self) -> str:
        """How the step was judged, for its note."""
        if self.test is None:
            return f"asv step rule: levels differ by >= {MIN_STEP:.0%}, no per-sample test"
        return self.test.text()

    @property
    def change_pct(self) -> float | None:
        return None if self.before == 0 else 100.0 * (self.after - self.before) / abs(self.before)


@dataclass
class Series:
    target: str
    entry: str
    run_ids: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)  # flagged
    group: str | None = None  # fmr_per_group / fnmr_per_group: the demographic group of this series
    noise: list[Step] = field(default_factory=list)  # candidates whose test found no change (p >= alpha)
    newest: ChangeTest | None = None  # the newest night against the one before (rates)

    @property
    def label(self) -> str:
        return self.entry if self.group is None else f"{self.entry} [{self.group}]"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "entry": self.entry, **({"group": self.group} if self.group else {}),
                "points": [{"run_id": r, "created_utc": c, "value": v}
                           for r, c, v in zip(self.run_ids, self.created, self.values)],
                "steps": [_step_dict(s) for s in self.steps], "noise": [_step_dict(s) for s in self.noise],
                "newest": self.newest.to_dict() if self.newest else None}


def _step_dict(s: Step) -> dict[str, Any]:
    return {"run_id": s.run_id, "index": s.index, "before": s.before, "after": s.after, "change_pct": s.change_pct,
            "newest": s.newest, "rule": s.rule(), "test": s.test.to_dict() if s.test else None}


def noise_scale(y: np.ndarray) -> float:
    """Robust noise sigma from successive differences: a step moves one difference, not the median."""
    if y.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(y) - np.median(np.diff(y)))) / math.sqrt(2.0))


def change_points(y: Sequence[float], *, gamma: float = GAMMA, min_step: float = MIN_STEP) -> list[int]:
    """Indices where a new level starts (see the module docstring); [] for fewer than 4 points."""
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < 4:
        return []
    try:
        import ruptures
    except ImportError:
        raise UnavailableError("bench trend needs ruptures: pip install 'edge-fair-bench[store]'") from None

    sigma = noise_scale(y)
    scale = max(float(np.median(np.abs(y))), 1e-12)
    sigma = max(sigma, 1e-6 * scale)  # a noiseless series: any real step is still found, ties are not
    breaks = ruptures.Pelt(model="l1", min_size=1, jump=1).fit(y.reshape(-1, 1)).predict(pen=gamma * sigma * math.log(n))
    bounds = [0] + list(breaks)
    out = []
    for i in range(1, len(bounds) - 1):
        before = float(np.median(y[bounds[i - 1]:bounds[i]]))
        after = float(np.median(y[bounds[i]:bounds[i + 1]]))
        rel = abs(after - before) / abs(before) if before else math.inf
        if rel >= min_step and after != before:
            out.append(bounds[i])
    return out


def parse_since(since: str | None, now: datetime | None = None) -> str | None:
    """'30d' / '12h' / '2w' (before now) or an ISO date -> the ISO UTC string store.query takes."""
    if not since:
        return None
    m = re.fullmatch(r"(\d+)([hdw])", since.strip())
    if not m:
        return since
    hours = int(m.group(1)) * {"h": 1, "d": 24, "w": 168}[m.group(2)]
    return ((now or datetime.now(timezone.utc)) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def trends(runs: Sequence[Run], metric: str, *, entry_glob: str = "*", alpha: float = ALPHA) -> list[Series]:
    """Series per (target, entry) over `runs`, in the order given: the store's order (ResultStore.query, by its
    sequence, oldest first), never re-sorted by the runs' own dates, which a board's clock can put anywhere.
    A rate's change points and its newest night are tested at `alpha` (module docstring)."""
    if metric not in METRICS:
        raise UsageError(f"unknown trend metric '{metric}'; valid: {', '.join(METRICS)}")
    by_key: dict[tuple[str, str, str | None], Series] = {}
    for run in runs:
        for e in run.entries:
            if not fnmatch.fnmatchcase(e["entry"], entry_glob):
                continue
            if metric in PER_GROUP:  # one series per group
                points = list(group_values(run, e, PER_GROUP[metric]).items())
            else:
                v = metric_value(run, e, metric)
                points = [] if v is None else [(None, v)]
            for group, v in points:
                s = by_key.setdefault((run.target, e["entry"], group), Series(run.target, e["entry"], group=group))
                s.run_ids.append(run.run_id)
                s.created.append(run.doc["created_utc"])
                s.values.append(float(v))
    tester = ChangeTester(list(runs), metric, alpha) if metric in TESTED_METRICS else None
    for s in by_key.values():
        y = np.asarray(s.values)
        idx = change_points(y)
        bounds = [0] + idx + [len(y)]
        for j, i in enumerate(idx):
            test = tester.test(s.run_ids[i - 1], s.run_ids[i], s.entry, s.group) if tester else None
            step = Step(i, s.run_ids[i], float(np.median(y[bounds[j]:i])), float(np.median(y[i:bounds[j + 2]])),
                        test)
            (s.steps if step.flagged else s.noise).append(step)
        if tester and len(y) >= 2:
            s.newest = tester.test(s.run_ids[-2], s.run_ids[-1], s.entry, s.group)
            if s.newest and s.newest.flagged and len(y) - 1 not in idx:
                s.steps.append(Step(len(y) - 1, s.run_ids[-1], float(y[-2]), float(y[-1]), s.newest, newest=True))
    return sorted(by_key.values(), key=lambda s: (s.target, s.entry, s.group or ""))
