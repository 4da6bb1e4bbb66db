"""The camera section of a report: what a capture-condition sweep (`bench run --condition NAME:L1,L2,...`,
docs/camera.md) does to each group, at each precision.

A sweep is found among the runs given to `bench report`: runs of one target under levels of one condition, each
comparable with an unmodified run (the condition's reference level, e.g. exposure:0 or wb:6504, else a run without
--condition, else another condition's reference level, whose pixels are the same) on the same data and chips (harness/report/drift.py's refusal rules). Levels run from the reference
outwards, in order of severity (darker / brighter, more blur, fewer bits, a smaller face); a condition with a
reference level in the middle (exposure, white balance) gives one sweep per side.

Per sweep, model and dataset:
- curves: per group, the task's rate at each level with its interval, one panel per variant (precision):
  gender accuracy and detection recall with Wilson intervals over the faces acquired (harness.metrics.rate_rows),
  FMR/FNMR at the fp32 threshold of the unmodified run (what a fielded camera inherits), subject-weighted with
  subject-bootstrap intervals (harness.metrics.per_group_error_rates);
- the first level that differs: per group and variant, each level against the unmodified run, paired face by face
  (or comparison by comparison) with the exact McNemar test (precision_loss.decision_flips, as --drift does); the
  first level in order of severity with p < alpha, or "none up to" the last level. Each level is tested at alpha
  on its own: over k levels the chance that some level shows a change that is not there is up to k x alpha
  (Bonferroni's bound), so the p of each level is printed beside it;
- the interaction: for each lower-precision variant and level, whether its loss under the condition exceeds the
  reference precision's (harness/metrics/interaction.py: the difference of the paired changes, a subject-bootstrap
  interval and Fisher's exact randomisation test). Gender and detection only: verification's pairs share faces,
  so a per-pair randomisation test would overstate the evidence; not computed there (the section says so);
- whether a group's error gap remains after conditioning on quality: per variant and level, each group against the
  faces of all other groups, within tertiles of face-region brightness, as a Mantel-Haenszel pooled odds ratio
  beside the crude one (harness/metrics/stratified.py). Gender and detection only, for the same reason.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import IntegrityError
from harness.names import shown
from harness.report.drift import refusal
from harness.report.summary import fmt_rate
from harness.results.store import Run

DEFAULT_ALPHA = 0.05
# Conditions whose lower level is the harsher capture (fewer bits, lower quality, a smaller face).
_LOWER_IS_HARSHER = frozenset({"jpeg", "h264", "h265", "distance"})
# Per task: (metric, per-sample 0/1 column) drawn and tested; verification is scored on pairs at a threshold.
TASK_COLUMNS = {"gender": ("accuracy", "correct"), "detection": ("recall", "det_hit")}
NO_INTERACTION_VERIFICATION = ("int8 x condition interaction: not computed for verification (pairs share faces, so "
                               "a per-pair randomisation test would overstate the evidence)")


def condition_of(run: Run) -> dict[str, Any] | None:
    """The run's capture condition (run.json data.condition), None without one. A condition whose name is not
    text or whose level is not a finite number is a corrupt result file: IntegrityError (exit 4), one line."""
    cond = (run.doc.get("data") or {}).get("condition")
    if cond is None:
        return None
    level = cond.get("level") if isinstance(cond, dict) else None
    if (not isinstance(cond, dict) or not isinstance(cond.get("name"), str) or isinstance(level, bool)
            or not isinstance(level, (int, float)) or not np.isfinite(level)):
        where = f"{shown(run.path / 'run.json')}" if run.path is not None else f"run {run.run_id}"
        raise IntegrityError(f"{where}: data.condition is not a condition with a name and a numeric level")
    return cond


@dataclass
class Sweep:
    """One condition, one side of its reference level, on one target: the unmodified run and the levels."""

    name: str
    unit: str
    direction: str                 # "" or "below" / "above" the reference level
    reference: Run
    reference_level: float | None  # None: the reference is a run without --condition
    levels: list[tuple[float, Run]] = field(default_factory=list)  # in order of severity
    left_out: list[str] = field(default_factory=list)            # runs of a level already in the sweep

    @property
    def title(self) -> str:
        cond = condition_of(self.reference)
        ref = (f"{self.reference_level:g} {self.unit}" if self.reference_level is not None
               else "no condition" if cond is None else f"{cond.get('label') or cond['name']} (the unmodified image)")
        side = f", {self.direction} the reference" if self.direction else ""
        return (f"{self.name}{side}: {', '.join(f'{lv:g}' for lv, _ in self.levels)} {self.unit} against {ref} "
                f"(run {self.reference.run_id}) on {self.reference.target}")


def _reference_level(name: str) -> float | None:
    from harness.camera.conditions import KINDS

    kind = KINDS.get(name)
    return None if kind is None else kind.reference


def _severity(name: str, level: float, ref: float | None) -> float:
    if ref is not None:
        return abs(level - ref)
    return -level if name in _LOWER_IS_HARSHER else level


def find_sweeps(runs: Sequence[Run]) -> list[Sweep]:
    """The sweeps among `runs` (see the module doc). A level run with no comparable unmodified run among them is
    left out of every sweep; a run given twice counts once."""
    runs = list({r.run_id: r for r in runs}.values())
    sweeps: dict[tuple, Sweep] = {}
    for run in runs:
        cond = condition_of(run)
        if not cond or cond.get("is_reference"):
            continue
        name, level = str(cond.get("name")), float(cond.get("level"))
        ref_level = _reference_level(name)
        candidates = [r for r in runs if r.target == run.target and r.run_id != run.run_id
                      and refusal(r, run) is None
                      and (condition_of(r) is None or condition_of(r).get("is_reference"))]
        if not candidates:
            continue
        # the condition's own reference level first (the sweep's first run), then a run without --condition, then
        # another condition's reference level (exposure:0, wb:6504: the transform returns the image unchanged, so
        # its pixels are the unmodified run's; e.g. an h264 run against the exposure sweep's 0 EV run)
        own = lambda r: condition_of(r) is not None and condition_of(r).get("name") == name  # noqa: E731
        ref = min(candidates, key=lambda r: (not own(r), condition_of(r) is not None, r.doc.get("created_utc") or ""))
        own_ref = ref_level if own(ref) else None
        direction = "" if ref_level is None else ("below" if level < ref_level else "above")
        key = (run.target, name, direction, ref.run_id)
        sweep = sweeps.setdefault(key, Sweep(name, str(cond.get("unit") or ""), direction, ref, own_ref))
        same = next((r for lv, r in sweep.levels if lv == level), None)
        if same is None:
            sweep.levels.append((level, run))
        else:
            sweep.left_out.append(f"run {run.run_id} repeats level {level:g} {sweep.unit} of run {same.run_id}; "
                                  "left out (one run per level)")
    for sweep in sweeps.values():
        sweep.levels.sort(key=lambda x: _severity(sweep.name, x[0], _reference_level(sweep.name)))
    return list(sweeps.values())


def _frame(run: Run, entry: str, dataset: str) -> pd.DataFrame:
    from harness.scoring import samples_frame

    df = samples_frame(run.samples(entry))
    return df[df["dataset"] == dataset].reset_index(drop=True) if len(df) and "dataset" in df else df


def _success(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df:
        return pd.Series(np.nan, index=df.index)
    return df[col].map(lambda v: np.nan if v is None or (isinstance(v, float) and np.isnan(v)) else float(v))


@dataclass
class Block:
    """One model on one dataset within a sweep: its rows, ready for charts and tables."""

    model: str
    task: str
    dataset: str
    group_by: str
    variants: list[str]
    curves: list[dict] = field(default_factory=list)        # metric, variant, level, group, value, ci ...
    first: list[dict] = field(default_factory=list)         # metric, variant, group, per-level tests, first
    interactions: list[dict] = field(default_factory=list)  # variant, level, group, interaction, p ...
    stratified: list[dict] = field(default_factory=list)    # variant, level, stratified_gap's result
    notes: list[str] = field(default_factory=list)


def _entries(sweep: Sweep) -> tuple[dict[str, list[dict]], list[str]]:
    """model -> ok entries that ran in the reference and at every level with the same pack; notes for the rest."""
    by_model: dict[str, list[dict]] = {}
    notes = []
    ok = lambda run: {x["entry"]: x for x in run.entries if x.get("status") == "ok"}  # noqa: E731
    level_entries = [ok(run) for _, run in sweep.levels]
    for entry_id, x in ok(sweep.reference).items():
        missing = [f"{lv:g}" for (lv, _), e in zip(sweep.levels, level_entries)
                   if entry_id not in e or e[entry_id].get("model_sha256") != x.get("model_sha256")]
        if missing:
            notes.append(f"{entry_id}: not run ok with the same pack at level(s) {', '.join(missing)}; left out")
            continue
        by_model.setdefault(x["model"], []).append(x)
    return by_model, notes


def _reference_entry(entries: list[dict]) -> dict | None:
    """The model's reference precision: its manifest's reference variant, else its fp32 entry."""
    from harness.scoring import _reference_variant

    model = entries[0]["model"]
    want = _reference_variant(model)
    return (next((x for x in entries if x["variant"] == want), None)
            or next((x for x in entries if x.get("precision") == "fp32"), None))


def _rate_block(sweep: Sweep, block: Block, entries: list[dict], gb: list[str], alpha: float, seed: int,
                n_boot: int) -> None:
    from harness import metrics
    from harness.metrics.interaction import paired_interaction
    from harness.metrics.precision_loss import decision_flips
    from harness.metrics.stratified import stratified_gap

    metric, col = TASK_COLUMNS[block.task]
    frames: dict[tuple[str, float | None], pd.DataFrame] = {}
    for x in entries:
        frames[(x["entry"], None)] = _frame(sweep.reference, x["entry"], block.dataset)
        for level, run in sweep.levels:
            frames[(x["entry"], level)] = _frame(run, x["entry"], block.dataset)
    points = [(None, sweep.reference_level)] + [(lv, lv) for lv, _ in sweep.levels]
    for x in entries:
        for key, at in points:
            d = frames[(x["entry"], key)]
            if d.empty or col not in d:
                continue
            d = d.assign(_succ=_success(d, col))
            for r in metrics.rate_rows(d, metric=metric, success_col="_succ", group_by=gb):
                block.curves.append({**r, "variant": x["variant"], "level": at, "reference": key is None})
            block.stratified.append({"variant": x["variant"], "level": at, "metric": metric,
                                     **stratified_gap(d, success_col="_succ", group_by=gb)})
        ref = frames[(x["entry"], None)]
        tests: dict[str, dict] = {}
        for level, _ in sweep.levels:
            lv = frames[(x["entry"], level)]
            if ref.empty or lv.empty or col not in ref or col not in lv:
                continue
            flips = decision_flips(ref.assign(_dec=_success(ref, col)), lv.assign(_dec=_success(lv, col)), "_dec", gb)
            for f in flips:
                tests.setdefault(f["group"], {})[level] = f
        for group, per_level in tests.items():
            block.first.append(_first_row(sweep, metric, x["variant"], group, per_level, alpha))
    ref_entry = _reference_entry(entries)
    if ref_entry is None:
        block.notes.append(f"{block.model}: no fp32 entry in the sweep; the interaction needs one")
        return
    for x in entries:
        if x is ref_entry:
            continue
        for level, _ in sweep.levels:
            fr = [frames[(ref_entry["entry"], None)], frames[(ref_entry["entry"], level)],
                  frames[(x["entry"], None)], frames[(x["entry"], level)]]
            if any(f.empty or col not in f for f in fr):
                continue
            fr = [f.assign(_dec=_success(f, col)) for f in fr]
            for r in paired_interaction(*fr, column="_dec", group_by=gb, seed=seed, n_boot=n_boot):
                block.interactions.append({**r, "metric": metric, "variant": x["variant"],
                                           "reference_variant": ref_entry["variant"], "level": level,
                                           "significant": r["p_value"] < alpha})


def _first_row(sweep: Sweep, metric: str, variant: str, group: str, per_level: dict[float, dict],
               alpha: float) -> dict:
    first = next((lv for lv, _ in sweep.levels if lv in per_level and per_level[lv]["p_value"] < alpha), None)
    tested = [lv for lv, _ in sweep.levels if lv in per_level]
    return {"metric": metric, "variant": variant, "group": group,
            "n": max((t["n"] for t in per_level.values()), default=0),
            "tests": {lv: {k: per_level[lv][k] for k in ("n", "b", "c", "p_value")} for lv in tested},
            "first_level": first, "last_level": tested[-1] if tested else None}


def _embedding_frame(run: Run, entry: str, dataset: str) -> pd.DataFrame:
    from harness.scoring import samples_frame
    from harness.watchlist import entry_embeddings

    raw = run.samples(entry)
    df = samples_frame(raw)
    arr = run.array("embeddings", entry)  # a run folder's or a store's embeddings/<entry>.npy: row i = record i
    if arr is not None and arr.ndim == 2 and arr.shape[0] == len(raw):
        first: dict[str, int] = {}
        for i, r in enumerate(raw):
            first.setdefault(r.get("sample_id"), i)
        emb = arr.astype(np.float64)[[first[s] for s in df["sample_id"]]] if len(df) else arr[:0]
    else:  # older runs: each record's own "embedding"
        emb = entry_embeddings(None, entry, df, raw)
    df = df.assign(_emb=list(emb)) if len(df) else df
    return df[df["dataset"] == dataset].reset_index(drop=True) if len(df) else df


def _verification_block(sweep: Sweep, block: Block, entries: list[dict], gb: list[str], alpha: float, seed: int,
                        n_boot: int) -> None:
    from harness import metrics
    from harness.metrics.cross_isa import pair_decisions
    from harness.metrics.precision_loss import decision_flips

    ref_entry = _reference_entry(entries)
    thr = (((ref_entry or {}).get("metrics") or {}).get("verification") or {}).get(block.dataset, {}).get("threshold")
    if thr is None:
        block.notes.append(f"{block.model} on {block.dataset}: no fp32 threshold in the unmodified run; "
                           "FMR/FNMR not drawn")
        return
    block.notes.append(f"FMR/FNMR at the fp32 threshold of the unmodified run, {thr:.4f}. "
                       + NO_INTERACTION_VERIFICATION)
    gb_name = "*".join(gb)

    def ok_matrix(df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        keep = df[[bool(np.isfinite(e).all()) and e.size > 0 for e in df["_emb"]]] if len(df) else df
        return (np.stack(keep["_emb"].to_list()) if len(keep) else np.zeros((0, 0))), keep

    for x in entries:
        ref_df = _embedding_frame(sweep.reference, x["entry"], block.dataset)
        if "_emb" not in ref_df or "subject" not in ref_df:
            block.notes.append(f"{x['entry']} on {block.dataset}: no embeddings or subjects in the unmodified run")
            continue
        points = [(None, sweep.reference_level, ref_df)] + [
            (lv, lv, _embedding_frame(run, x["entry"], block.dataset)) for lv, run in sweep.levels]
        points = [p for p in points if "_emb" in p[2]]
        for key, at, df in points:
            emb, keep = ok_matrix(df)
            if len(keep) < 4:
                continue
            groups = keep[gb].astype(str).agg("*".join, axis=1).to_numpy()
            scores = metrics.pair_scores(emb, keep["subject"].astype(str).to_numpy(), groups, group_by=gb_name)
            for r in metrics.per_group_error_rates(scores, threshold=thr, n_boot=n_boot, seed=seed):
                if r["metric"] in ("fmr", "fnmr") and r.get("threshold_kind") == "tuned":
                    block.curves.append({**r, "variant": x["variant"], "level": at, "reference": key is None})
        tests: dict[tuple[str, str], dict] = {}
        for level, _, lv_df in points[1:]:
            paired = ref_df[["sample_id", "subject", *gb, "_emb"]].merge(
                lv_df[["sample_id", "_emb"]], on="sample_id", suffixes=("_ref", "_lv"))
            if len(paired) < 4:
                continue
            groups = paired[gb].astype(str).agg("*".join, axis=1).to_numpy()
            subjects = paired["subject"].astype(str).to_numpy()
            sides = [pair_decisions(np.stack(paired[c].to_list()), subjects, groups, thr)
                     for c in ("_emb_ref", "_emb_lv")]
            for metric, genuine in (("fnmr", True), ("fmr", False)):
                a, b = (s[s["genuine"] == genuine] for s in sides)
                for f in decision_flips(a, b, "correct", ["group"]):
                    if "|" not in f["group"]:  # cross-group pairs count in "all" only, as --drift does
                        tests.setdefault((metric, f["group"]), {})[level] = f
        for (metric, group), per_level in tests.items():
            block.first.append(_first_row(sweep, metric, x["variant"], group, per_level, alpha))


IDENTIFICATION_NOTE = (
    "1:N watchlist search: FPIR and FNIR (rank {rank}) per probe group at the threshold tuned on the unmodified "
    "run's fp32 searches for FPIR {fpir:g}, {thr:.4f}, kept fixed at every level (the deployed threshold does not "
    "follow the camera). The watchlist is enrolled from the unmodified images (custody photos) by the same variant, "
    "with the unmodified distractors; only the probes come from each level. Counts are searches, rates weight each "
    "person once with a subject-bootstrap interval (harness/metrics/identification.py); each level against the "
    "unmodified image by exact McNemar on the same searches, paired by probe.")


def camera_searches(ref_df: pd.DataFrame, lv_df: pd.DataFrame, split, distractors: pd.DataFrame | None,
                    dis_emb: np.ndarray | None, group_by: list[str], dis_group_by: list[str], seed: int):
    """The watchlist searches of one level (harness.watchlist.run_searches, the scorer `bench run` uses): the
    gallery rows (and the distractors) from the unmodified run `ref_df`, the probe rows from the level `lv_df`
    (frames of _embedding_frame, embeddings in "_emb"). A person is enrolled when their custody photo was
    acquired unmodified, whatever the camera does to it."""
    from harness import watchlist as wl

    def rows(df: pd.DataFrame, gallery: bool) -> pd.DataFrame:
        role = split.roles(df["image"], df["subject"].astype(str))
        return df[(role == "gallery").to_numpy() == gallery]

    frame = pd.concat([rows(ref_df, True), rows(lv_df, False)], ignore_index=True)
    dim = max((e.size for e in frame["_emb"]), default=0)
    emb = np.array([e if e.size == dim else np.full(dim, np.nan) for e in frame["_emb"]],
                   np.float64).reshape(len(frame), dim)
    return wl.run_searches(frame.drop(columns="_emb"), emb, emb, split, distractors, dis_emb, group_by,
                           dis_group_by, seed)


def _fixed_fpir_threshold(sweep: Sweep, entries: list[dict], dataset: str) -> dict | None:
    """The tuned_fpir threshold of the unmodified run's identification section (its reference entry's first:
    every entry's section carries the fp32 reference's thresholds)."""
    ref_entry = _reference_entry(entries)
    for x in [ref_entry, *entries]:
        sec = (((x or {}).get("metrics") or {}).get("identification") or {}).get(dataset) or {}
        t = next((t for t in sec.get("thresholds") or [] if t.get("kind") == "tuned_fpir"), None)
        if t is not None and isinstance(t.get("value"), (int, float)) and np.isfinite(t["value"]):
            return t
    return None


def _identification_block(sweep: Sweep, block: Block, entries: list[dict], datasets: dict[str, dict], alpha: float,
                          seed: int, n_boot: int) -> None:
    from harness import watchlist as wl
    from harness.data.watchlist import WatchlistSplit
    from harness.scoring import groupings

    rec = datasets[block.dataset]
    split = WatchlistSplit.from_dict(block.dataset, rec["identification"])
    gb = groupings(rec)[0]
    dis_name = split.rules.distractors
    dis_gb = groupings(datasets[dis_name])[0] if dis_name in datasets else []
    thr = _fixed_fpir_threshold(sweep, entries, block.dataset)
    if thr is None:
        block.notes.append(f"{block.model} on {block.dataset}: no fp32-tuned FPIR threshold in the unmodified run's "
                           "identification section; FPIR/FNIR not drawn")
        return
    block.notes.append(IDENTIFICATION_NOTE.format(rank=wl.RANK_R, fpir=float(thr.get("target_fpir") or 0),
                                                  thr=float(thr["value"])))
    thresholds = [{"value": float(thr["value"]), "kind": "tuned_fpir"}]
    for x in entries:
        ref_df = _embedding_frame(sweep.reference, x["entry"], block.dataset)
        if "_emb" not in ref_df or "subject" not in ref_df:
            block.notes.append(f"{x['entry']} on {block.dataset}: no embeddings or subjects in the unmodified run")
            continue
        dis = _embedding_frame(sweep.reference, x["entry"], dis_name) if dis_name in datasets else None
        dis_emb = None
        if dis is not None and len(dis) and "_emb" in dis:
            dim = max(e.size for e in dis["_emb"])
            dis_emb = np.array([e if e.size == dim else np.full(dim, np.nan) for e in dis["_emb"]], np.float64)
            dis = dis.drop(columns="_emb")
        else:
            dis = None
        points = [(None, sweep.reference_level, ref_df)] + [
            (lv, lv, _embedding_frame(run, x["entry"], block.dataset)) for lv, run in sweep.levels]
        decisions = {}
        for key, at, df in points:
            if "_emb" not in df or not len(df):
                continue
            s = camera_searches(ref_df, df, split, dis, dis_emb, gb, dis_gb, seed)
            for r in wl.rows_at(s, thresholds, gb, n_boot=n_boot, seed=seed)["rates"]:
                if r["metric"] in ("fpir", "fnir"):
                    block.curves.append({**r, "variant": x["variant"], "level": at, "reference": key is None})
            decisions[key] = wl.decisions(s, thresholds, gb)
        tests: dict[tuple[str, str], dict] = {}
        for level, _ in sweep.levels:
            if None not in decisions or level not in decisions:
                continue
            for f in wl.flips(decisions[None], decisions[level], gb, "camera"):
                tests.setdefault((f["metric"], f["group"]), {})[level] = f
        for (metric, group), per_level in sorted(tests.items(), key=lambda t: (t[0][0] != "fpir", t[0][1] != "all",
                                                                              t[0][1])):
            block.first.append(_first_row(sweep, metric, x["variant"], group, per_level, alpha))


@dataclass
class CameraReport:
    sweeps: list[tuple[Sweep, list[Block], list[str]]]
    alpha: float


def camera_report(runs: Sequence[Run], alpha: float = DEFAULT_ALPHA) -> CameraReport:
    out = []
    for sweep in find_sweeps(runs):
        by_model, notes = _entries(sweep)
        notes = sweep.left_out + notes
        settings = sweep.reference.doc.get("settings") or {}
        seed, n_boot = int(settings.get("seed", 0) or 0), int(settings.get("n_boot", 1000) or 1000)
        blocks = []
        datasets = {d["id"]: d for d in (sweep.reference.doc.get("data") or {}).get("datasets", [])}
        for model, entries in by_model.items():
            task = entries[0].get("task")
            for ds in (sweep.reference.doc.get("data") or {}).get("datasets", []):
                gb = list(ds.get("default_group_by") or [])
                block = Block(model, str(task), ds["id"], "*".join(gb), [x["variant"] for x in entries])
                if task in TASK_COLUMNS:
                    _rate_block(sweep, block, entries, gb, alpha, seed, n_boot)
                elif task == "verification":
                    _verification_block(sweep, block, entries, gb, alpha, seed, n_boot)
                else:
                    block.notes.append(f"{model}: task {task} has no camera curves")
                if block.curves or block.notes:
                    blocks.append(block)
                if task == "verification" and ds.get("identification"):
                    ident = Block(model, "identification", ds["id"], "*".join(gb), block.variants)
                    _identification_block(sweep, ident, entries, datasets, alpha, seed, n_boot)
                    blocks.append(ident)
        out.append((sweep, blocks, notes))
    return CameraReport(out, alpha)


# ---- rendering ------------------------------------------------------------------------------------------------

def block_title(block: Block) -> str:
    what = ", 1:N watchlist search (probe group)" if block.task == "identification" else ""
    return f"{block.model} on {block.dataset}, by {block.group_by}{what}"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def first_headers(sweep: Sweep) -> list[str]:
    return (["variant", "metric", "group", "n"] + [f"{lv:g} {sweep.unit}: b, c, p" for lv, _ in sweep.levels]
            + ["first level that differs"])


def first_cells(sweep: Sweep, row: dict) -> list[str]:
    cells = [row["variant"], row["metric"], row["group"], str(row["n"])]
    for lv, _ in sweep.levels:
        t = row["tests"].get(lv)
        cells.append("-" if t is None else f"b{t['b']} c{t['c']}, p={_p(t['p_value'])}")
    if row["first_level"] is not None:
        cells.append(f"{row['first_level']:g} {sweep.unit}")
    else:
        cells.append("none up to " + ("-" if row["last_level"] is None else f"{row['last_level']:g} {sweep.unit}"))
    return cells


INTERACTION_HEADERS = ["variant vs reference", "level", "group", "faces", "reference change", "variant change",
                       "interaction [95% CI]", "faces worse / better", "p"]


def interaction_cells(sweep: Sweep, r: dict) -> list[str]:
    ci = "-" if r["ci_lo"] is None else f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]"
    return [f"{r['variant']} vs {r['reference_variant']}", f"{r['level']:g} {sweep.unit}", r["group"], str(r["n"]),
            f"{r['ref_change']:+.3f}", f"{r['var_change']:+.3f}", f"{r['interaction']:+.3f} {ci}",
            f"{r['worse']} / {r['better']}", _p(r["p_value"])]


def notes_text(alpha: float) -> tuple[str, str]:
    first = (f"Each level against the unmodified image, paired face by face (verification: comparison by "
             f"comparison at the fp32 threshold of the unmodified run; 1:N: search by search, by probe, at the "
             f"fp32-tuned FPIR threshold); b = right only unmodified, c = right only "
             f"under the condition, exact McNemar p. First level that differs: the first, in order of severity, "
             f"with p < {alpha:g}; each level is tested at {alpha:g} on its own, so over k levels a spurious one "
             f"has a chance up to k x {alpha:g}.")
    inter = ("Interaction: (variant's change) - (reference's change) under the condition, per face, averaged; "
             "negative = the lower precision loses more under the condition (the two compound). Interval: "
             "subject bootstrap; p: Fisher's exact randomisation (sign-flip) test on the subjects' totals "
             "(harness/metrics/interaction.py). Faces worse / better: contrast below / above 0.")
    return first, inter


STRATIFIED_HEADERS = ["variant", "level", "group vs reference", "errors / faces", "reference errors / faces",
                      "crude odds ratio [95% CI]", "within brightness tertiles: MH odds ratio [95% CI]", "p (CMH)",
                      "p (same ratio in every tertile)"]


def stratified_note(block: Block) -> str:
    edges = next((s["edges"] for s in block.stratified if s["edges"]), [])
    cuts = ", ".join(f"{e:.0f}" for e in edges[1:-1])
    return ("Whether a group's error gap remains after conditioning on quality: each group's odds of an error "
            "against the faces of all other groups, crude and pooled within tertiles of face-region brightness "
            f"(median skin luma{'; cuts ' + cuts + ' at the unmodified level' if cuts else ''}) by Mantel-Haenszel "
            "(1959), with the Robins-Breslow-Greenland interval, the Cochran-Mantel-Haenszel test of a common ratio "
            "of 1 and the Breslow-Day test of one ratio in every tertile (harness/metrics/stratified.py). A crude "
            "ratio away from 1 with a pooled one near 1: brightness explains the gap; both away from 1: it remains.")


def stratified_rows(sweep: Sweep, block: Block) -> list[list[str]]:
    def ratio(v, ci):
        return "-" if v is None else f"{v:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")

    out = []
    for s in block.stratified:
        at = "unmodified" if s["level"] is None else f"{s['level']:g} {sweep.unit}"
        if s["reason"]:
            out.append([s["variant"], at, s["reason"], "", "", "", "", "", ""])
            continue
        for r in s["rows"]:
            out.append([s["variant"], at, f"{r['group']} vs {s['reference_group']}", f"{r['errors']}/{r['n']}",
                        f"{r['ref_errors']}/{r['ref_n']}", ratio(r["crude_or"], r["crude_ci"]),
                        ratio(r["mh_or"], r["mh_ci"]) + (f" ({r['reason']})" if r["reason"] else ""),
                        _p(r["p_cmh"]), _p(r["p_homogeneity"])])
    return out


Series = tuple[str, list, list, list, list]  # group, x positions, values, ci_lo, ci_hi


def _curve_panels(sweep: Sweep, block: Block, metric: str) -> list[tuple[str, list[Series]]]:
    xs = [sweep.reference_level] + [lv for lv, _ in sweep.levels]
    panels = []
    for variant in block.variants:
        rows = [r for r in block.curves if r["variant"] == variant and r["metric"] == metric]
        groups = list(dict.fromkeys(r["group"] for r in rows))
        series = []
        for g in groups:
            by_x = {r["level"]: r for r in rows if r["group"] == g}
            series.append((g, list(range(len(xs))), [by_x.get(x, {}).get("value") for x in xs],
                           [by_x.get(x, {}).get("ci_lo") for x in xs], [by_x.get(x, {}).get("ci_hi") for x in xs]))
        if series:
            panels.append((variant, series))
    return panels


# A rate where higher is better, and the error it is the complement of (the buyer's page draws errors, log).
_AS_ERROR = {"accuracy": "error rate (1 - accuracy)", "recall": "miss rate (1 - recall)"}


def error_panels(sweep: Sweep, block: Block, metric: str) -> tuple[str, list[tuple[str, list[Series]]]]:
    """The curves of `metric` as an error rate (accuracy -> 1 - accuracy with its interval's ends swapped;
    FMR and FNMR as they are): (the error's name, panels as _curve_panels)."""
    panels = _curve_panels(sweep, block, metric)
    if metric not in _AS_ERROR:
        return metric, panels
    flip = lambda xs: [None if x is None else 1.0 - x for x in xs]  # noqa: E731
    return _AS_ERROR[metric], [(name, [(g, x, flip(v), flip(hi), flip(lo)) for g, x, v, lo, hi in series])
                               for name, series in panels]


def level_labels(sweep: Sweep) -> list[str]:
    return ["unmodified" if sweep.reference_level is None else f"{sweep.reference_level:g}"] + [
        f"{lv:g}" for lv, _ in sweep.levels]


def render_html_section(runs: Sequence[Run], alpha: float = DEFAULT_ALPHA) -> str:
    from harness.report import charts
    from harness.report.html import html_table

    e = lambda v: html.escape("" if v is None else str(v), quote=True)  # noqa: E731
    report = camera_report(runs, alpha)
    if not report.sweeps:
        return ("<p>No capture-condition sweep in these runs (give the runs of one <code>bench run --condition "
                "NAME:L1,L2,...</code> together with its unmodified run; docs/camera.md).</p>")
    first_note, inter_note = notes_text(alpha)
    parts = []
    for sweep, blocks, notes in report.sweeps:
        parts.append(f"<h3>{e(sweep.title)}</h3>")
        parts += [f'<div class="warn">{e(n)}</div>' for n in notes]
        xlabels = level_labels(sweep)
        for block in blocks:
            parts.append(f"<h4>{e(block_title(block))}</h4>")
            parts += [f"<p>{e(n)}</p>" for n in block.notes]
            for metric in dict.fromkeys(r["metric"] for r in block.curves):
                panels = _curve_panels(sweep, block, metric)
                svg = charts.level_facets(f"{block.model} on {block.dataset}: {metric} per group against "
                                          f"{sweep.name} ({sweep.unit})", panels, xlabels,
                                          f"{sweep.name} ({sweep.unit})", metric)
                parts.append(f'<div class="chart">{svg}</div>')
            if block.first:
                parts.append(f"<p>{e(first_note)}</p>" + html_table(
                    first_headers(sweep), [first_cells(sweep, r) for r in block.first],
                    [h == "n" for h in first_headers(sweep)]))
            if block.stratified:
                parts.append(f"<p>{e(stratified_note(block))}</p>" + html_table(
                    STRATIFIED_HEADERS, stratified_rows(sweep, block), [i >= 3 for i in range(len(STRATIFIED_HEADERS))]))
            if block.interactions:
                parts.append(f"<p>{e(inter_note)}</p>" + html_table(
                    INTERACTION_HEADERS, [interaction_cells(sweep, r) for r in block.interactions],
                    [i >= 3 for i in range(len(INTERACTION_HEADERS))]))
    return "".join(parts)


def markdown_section(runs: Sequence[Run], alpha: float = DEFAULT_ALPHA) -> list[str]:
    from harness.report.tables import md_cell, md_table

    report = camera_report(runs, alpha)
    if not report.sweeps:
        return []
    first_note, inter_note = notes_text(alpha)
    parts = ["## Camera: capture-condition sweeps", ""]
    for sweep, blocks, notes in report.sweeps:
        parts += [f"### {md_cell(sweep.title)}", ""] + [f"> {md_cell(n)}" for n in notes] + ([""] if notes else [])
        for block in blocks:
            parts += [md_cell(f"#### {block_title(block)}"), ""]
            parts += [md_cell(n) for n in block.notes] + ([""] if block.notes else [])
            xs = [sweep.reference_level] + [lv for lv, _ in sweep.levels]
            heads = ["variant", "metric", "group"] + ["unmodified" if x is None else f"{x:g} {sweep.unit}" for x in xs]
            rows = []
            for variant in block.variants:
                for metric in dict.fromkeys(r["metric"] for r in block.curves):
                    sel = [r for r in block.curves if r["variant"] == variant and r["metric"] == metric]
                    for g in dict.fromkeys(r["group"] for r in sel):
                        by_x = {r["level"]: r for r in sel if r["group"] == g}
                        rows.append([variant, metric, g] + [_rate_cell(by_x.get(x)) for x in xs])
            if rows:
                parts += [md_table(heads, rows), ""]
            if block.first:
                parts += [first_note, "", md_table(first_headers(sweep),
                                                   [first_cells(sweep, r) for r in block.first]), ""]
            if block.stratified:
                parts += [stratified_note(block), "", md_table(STRATIFIED_HEADERS, stratified_rows(sweep, block)), ""]
            if block.interactions:
                parts += [inter_note, "", md_table(INTERACTION_HEADERS,
                                                   [interaction_cells(sweep, r) for r in block.interactions]), ""]
    return parts


def _rate_cell(r: dict | None) -> str:
    if r is None or r.get("value") is None:
        return "-"
    ci = "" if r.get("ci_lo") is None else f" [{fmt_rate(r['ci_lo'])}, {fmt_rate(r['ci_hi'])}]"
    k = f" ({r['k']}/{r['n']})" if r.get("k") is not None and r.get("n") is not None else ""
    return f"{fmt_rate(r['value'])}{ci}{k}"
