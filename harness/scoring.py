"""Score a run: per-sample outputs -> per-group metrics, disparities and precision-loss against the reference.

Runs on the host after the entries finish (or on any machine holding the run directory): it needs numpy/pandas
and the metrics package only. Every rate row carries a "dataset" context field, because groups of different
datasets (London's self-reported ethnicity, FairFace's annotator-perceived race) are never pooled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness import metrics
from harness.results.store import read_jsonl

from harness.tasks.registry import TASKS

# (metric, per-sample success column) per task, as each Task declares them (harness/tasks/registry.py).
TASK_METRICS = {name: task.rates for name, task in TASKS.items() if task.rates}


def _success(df: pd.DataFrame, col: str) -> pd.Series:
    return df[col].map(lambda v: np.nan if v is None or (isinstance(v, float) and np.isnan(v)) else float(v))


def _score_rate(m: dict, metric: str, col: str, d: pd.DataFrame, ref_df: pd.DataFrame | None, gb: list[str],
                dataset: str, seed: int, cfg) -> None:
    """Rate rows and disparities of one per-sample success column, and its paired comparison with the reference."""
    if col not in d or _success(d, col).isna().all():
        return
    d = d.assign(_succ=_success(d, col))
    rows = _with_dataset(metrics.rate_rows(d, metric=metric, success_col="_succ", group_by=gb), dataset)
    m["rates"] += rows
    m["disparities"] += metrics.disparity_rows(rows, metric)
    if ref_df is None or col not in ref_df:
        return
    r = ref_df.assign(_succ=_success(ref_df, col))
    ref_rows = _with_dataset(metrics.rate_rows(r, metric=metric, success_col="_succ", group_by=gb), dataset)
    m["reference"]["deltas"] += _with_dataset(metrics.paired_deltas(
        r, d, success_col="_succ", group_by=gb, seed=seed, n_boot=cfg.n_boot, metric=metric), dataset)
    m["reference"]["retention"] += metrics.retention(ref_rows, rows)
    # named by the metric (detection scores two columns per group: "recall" and "found" must stay apart)
    m["reference"]["flips"] += _with_dataset([{**f, "metric": metric} for f in metrics.decision_flips(
        r.assign(_dec=r["_succ"]), d.assign(_dec=d["_succ"]), "_dec", gb)], dataset)


def load_samples(run_dir: Path, entry: str) -> pd.DataFrame:
    return samples_frame(read_jsonl(Path(run_dir) / "samples" / f"{entry}.jsonl"))


def samples_frame(records: list[dict]) -> pd.DataFrame:
    """Per-sample records (of a run directory or a run read from a store) as a frame, one row per sample_id."""
    # A resumed entry may have re-fed a sample whose record had been written just before the kill: keep the first.
    df = pd.DataFrame.from_records(records)
    return df.drop_duplicates("sample_id", keep="first").reset_index(drop=True) if len(df) else df


def _with_dataset(rows: list[dict], dataset: str) -> list[dict]:
    return [dict(r, dataset=dataset) for r in rows]


def _fta_rows(df: pd.DataFrame, group_by: list[str], dataset: str) -> dict:
    d = df.assign(_fta=(df["status"] == "fta").astype(float))
    reasons = df.loc[df["status"] == "fta", "fta_reason"].fillna("unknown").value_counts().to_dict()
    return {"dataset": dataset, "n": int(len(df)), "fta": int(d["_fta"].sum()), "by_reason": reasons,
            "by_group": _with_dataset(metrics.rate_rows(d, metric="fta_rate", success_col="_fta",
                                                        group_by=group_by), dataset)}


def _stage_stats(df: pd.DataFrame, group_by: list[str]) -> dict:
    """Per-stage time (ms), overall and per group: ISO/IEC 19795-10 asks for processing-time differentials."""
    out = {}
    for col in ("decode_ms", "condition_ms", "detect_ms", "align_ms", "infer_ms", "post_ms"):
        if col not in df or df[col].dropna().empty:
            continue
        s = df[col].dropna().astype(float)
        out[col] = {"n": int(len(s)), "p50_ms": float(s.median()), "p90_ms": float(s.quantile(0.9)),
                    "mean_ms": float(s.mean())}
        if group_by and all(g in df for g in group_by):
            key = df[group_by].astype(str).agg("*".join, axis=1)
            out[col]["by_group"] = {g: float(v) for g, v in df[col].astype(float).groupby(key).median().items()}
    return out


def _quality_stats(df: pd.DataFrame, group_by: list[str]) -> dict:
    """Face-image quality per group (medians and counts of the q_* fields; harness/camera/quality.py): whether a
    group's error gap comes with darker, lower-contrast or smaller faces (Wu et al. 2023)."""
    out = {}
    for col in [c for c in df.columns if c.startswith("q_")]:
        s = pd.to_numeric(df[col], errors="coerce").dropna()
        if s.empty:
            continue
        out[col[2:]] = {"n": int(len(s)), "median": float(s.median()), "p10": float(s.quantile(0.1)),
                        "p90": float(s.quantile(0.9))}
        if group_by and all(g in df for g in group_by):
            key = df[group_by].astype(str).agg("*".join, axis=1)
            vals = pd.to_numeric(df[col], errors="coerce")
            out[col[2:]]["by_group"] = {g: {"n": int(v.notna().sum()), "median": float(v.median())}
                                        for g, v in vals.groupby(key) if v.notna().any()}
    return out


def _embeddings(df: pd.DataFrame) -> np.ndarray:
    dim = next((len(e) for e in df["embedding"] if isinstance(e, list)), 0)
    return np.array([e if isinstance(e, list) else [np.nan] * dim for e in df["embedding"]], np.float64)


def _verification(df: pd.DataFrame, group_by: list[str], cfg, threshold: float | None, seed: int) -> tuple[dict, object]:
    """Subject-weighted FMR/FNMR rows with subject-level intervals (metrics.per_group_error_rates).

    A set with no genuine pair (one image per subject) still scores: FNMR rows are "not computable: no genuine
    pairs" and FMR is reported. With one subject (no impostor pair) no threshold can be tuned: the tuned rows
    say so, unless the reference's threshold is inherited, and the fixed cut-offs are scored as usual.
    """
    ok = df[df["status"] == "ok"]
    emb = _embeddings(ok)
    groups = ok[group_by].astype(str).agg("*".join, axis=1).to_numpy()
    # counts from mergeable partials (no per-pair array): the own tuned threshold, the inherited one, the cut-offs
    scores = metrics.verification_counts(emb, ok["subject"].astype(str).to_numpy(), groups,
                                         group_by="*".join(group_by), target_fmr=cfg.target_fmr,
                                         thresholds=([] if threshold is None else [threshold]) + list(cfg.cutoffs))
    own = scores.tuned
    thr = own if threshold is None else threshold
    rows = metrics.per_group_error_rates(scores, threshold=thr, fixed_thresholds=cfg.cutoffs,
                                         target_fmr=cfg.target_fmr, n_boot=cfg.n_boot, seed=seed)
    return {"threshold": thr, "threshold_source": "own" if threshold is None else "reference",
            "own_threshold": own, "target_fmr": cfg.target_fmr, "n_genuine": scores.n_genuine,
            "n_impostor": scores.n_impostor, "n_subjects": int(scores.subjects.size), "rates": rows}, scores


def _paired_rates(ref_df: pd.DataFrame, var_df: pd.DataFrame, group_by: list[str], threshold: float, cfg,
                  seed: int) -> list[dict]:
    """Per group, the variant's FMR/FNMR at the fp32 threshold against fp32's own over the same comparisons
    (metrics.paired_error_rates): only samples both sides embedded are compared, in one order, so every pair is
    the same pair on both sides. [] when fewer than 4 such samples remain."""
    ok_ref = set(ref_df.loc[ref_df["status"] == "ok", "sample_id"])
    var = var_df[(var_df["status"] == "ok") & var_df["sample_id"].isin(ok_ref)].reset_index(drop=True)
    if len(var) < 4:
        return []
    ref = ref_df.set_index("sample_id").loc[var["sample_id"]].reset_index()
    groups = var[group_by].astype(str).agg("*".join, axis=1).to_numpy()
    subjects = var["subject"].astype(str).to_numpy()
    name = "*".join(group_by)
    ref_scores = metrics.pair_scores(_embeddings(ref), subjects, groups, group_by=name)
    var_scores = metrics.pair_scores(_embeddings(var), subjects, groups, group_by=name)
    if not ref_scores.n_impostor:
        return []
    return metrics.paired_error_rates(ref_scores, var_scores, threshold, target_fmr=cfg.target_fmr,
                                      n_boot=cfg.n_boot, seed=seed)


def groupings(dataset_record: dict) -> list[list[str]]:
    """A run.json data.datasets record's groupings, default first (runs before groupings existed: the default)."""
    return [list(g) for g in dataset_record.get("groupings") or [dataset_record.get("default_group_by") or []]]


def _frames_by_dataset(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {d: g.reset_index(drop=True) for d, g in df.groupby("dataset", sort=True)} if len(df) else {}


def score_run(run_dir: Path, doc: dict, cfg, *, results_root=None, searcher=None, device_search=None) -> dict:
    """Fill each ok entry's acquisition, stages and metrics (rate rows, disparities, reference comparisons).

    `searcher`: the 1:N scorer (default in-process; harness/search_cluster.py for a Dask cluster).
    `device_search`: during `bench run`, harness.search_job.DeviceSearch: each embedding entry's own watchlist
    gallery and probes are searched on the device too, into the entry's `speed.search.<dataset>` (`bench score`
    has no device and leaves that record as it is).
    `results_root` is where the reference run is read from: a ResultStore, a store URI or a results folder
    (harness.results.uri.as_store); a reference in a PostgreSQL store is read through it like a local one.
    """
    groupings_of = {d["id"]: groupings(d) for d in doc["data"]["datasets"]}
    ref_doc, ref_dir, ref = doc, Path(run_dir), None
    if cfg.reference_run:
        from harness.results.uri import as_store

        ref = as_store(results_root).load(cfg.reference_run)
        ref_doc, ref_dir = ref.doc, Path(f"<{ref.run_id}>") if ref.path is None else ref.path
    ref_entries = {e["entry"]: e for e in ref_doc["entries"] if e.get("status") == "ok"}
    seed = cfg.seed
    samples_cache: dict[tuple[str, str], pd.DataFrame] = {}

    def samples(directory: Path, entry: str) -> pd.DataFrame:
        key = (str(directory), entry)
        if key not in samples_cache:
            from_ref = ref is not None and directory == ref_dir
            df = samples_frame(ref.samples(entry)) if from_ref else load_samples(directory, entry)
            if len(df) and "embedding" not in df.columns:  # records without embeddings: the run's .npy holds them
                from harness.watchlist import entry_embeddings

                path, raw = _entry_records(directory, entry, ref if from_ref else None)
                arr = entry_embeddings(path, entry, df, raw)
                if arr.shape[1]:
                    df["embedding"] = [r.tolist() if np.isfinite(r).all() else None for r in arr]
            samples_cache[key] = df
        return samples_cache[key]

    # References first, so their thresholds exist when the variants are scored. A reference in another run brings
    # its thresholds with it: the fp32 threshold is what a fielded device inherits.
    entries = sorted(doc["entries"], key=lambda e: e["variant"] != _reference_variant(e["model"]))
    ref_thresholds: dict[tuple[str, str], float] = {}
    ident_cache: dict = {}
    if ref_dir != Path(run_dir):
        for rid, re_ in ref_entries.items():
            for dataset, v in ((re_.get("metrics") or {}).get("verification") or {}).items():
                ref_thresholds[(re_["model"], dataset)] = v["threshold"]
    for e in entries:
        if e.get("status") != "ok":
            continue
        df = samples(run_dir, e["entry"])
        ref_id = f"{e['model']}--{_reference_variant(e['model'])}"
        is_ref = ref_dir == Path(run_dir) and e["entry"] == ref_id
        m = {"rates": [], "disparities": [], "reference": {"entry": ref_id, "run": ref_doc["run_id"],
                                                            "deltas": [], "retention": [], "flips": [], "drift": [],
                                                            "threshold_transfer": [], "paired_rates": []}}
        acquisition = {"n": 0, "fta": 0, "by_reason": {}, "by_group": [], "by_dataset": []}
        e["stages"] = {}
        m["verification"] = {}
        for dataset, d in _frames_by_dataset(df).items():
            gbs = [[g for g in grouping if g in d.columns] for grouping in groupings_of.get(dataset, [[]])]
            gb = gbs[0]  # the default grouping: stages, verification's threshold and reference comparisons
            acq = _fta_rows(d, gb, dataset)
            acquisition["n"] += acq["n"]
            acquisition["fta"] += acq["fta"]
            for reason, count in acq["by_reason"].items():
                acquisition["by_reason"][reason] = acquisition["by_reason"].get(reason, 0) + int(count)
            acquisition["by_group"] += acq.pop("by_group")
            for other in gbs[1:]:
                acquisition["by_group"] += _fta_rows(d, other, dataset)["by_group"]
            acquisition["by_dataset"].append(acq)
            e["stages"][dataset] = _stage_stats(d, gb)
            if quality := _quality_stats(d, gb):
                e.setdefault("quality", {})[dataset] = quality
            ref_df = None
            if not is_ref and ref_id in ref_entries:
                ref_df = _frames_by_dataset(samples(ref_dir, ref_id)).get(dataset)
            if e["task"] in TASK_METRICS:
                for grouping in gbs:
                    for metric, col in TASK_METRICS[e["task"]]:
                        _score_rate(m, metric, col, d, ref_df, grouping, dataset, seed, cfg)
            elif e["task"] == "verification" and "embedding" in d and (d["status"] == "ok").sum() >= 4 \
                    and "subject" in d and d["subject"].notna().all():  # distractor faces (no identity) are not paired
                key = (e["model"], dataset)
                thr = None if is_ref else ref_thresholds.get(key)
                v, scores = _verification(d, gb, cfg, thr, seed)
                if is_ref:
                    ref_thresholds[key] = v["threshold"]
                rows = _with_dataset(v.pop("rates"), dataset)
                m["verification"][dataset] = v
                m["rates"] += rows
                for mm in ("fmr", "fnmr"):
                    if any(r["metric"] == mm for r in rows):
                        m["disparities"] += metrics.disparity_rows([r for r in rows if r.get("threshold_kind") == "tuned"], mm)
                m["disparities"] += metrics.verification_disparity_rows(
                    [r for r in rows if r.get("threshold_kind") == "tuned"])
                for other in gbs[1:]:  # more groupings: their rate rows and disparities at the same threshold
                    more, _ = _verification(d, other, cfg, v["threshold"], seed)
                    more_rows = _with_dataset(more["rates"], dataset)
                    m["rates"] += more_rows
                    tuned = [r for r in more_rows if r.get("threshold_kind") == "tuned"]
                    for mm in ("fmr", "fnmr"):
                        if any(r["metric"] == mm for r in tuned):
                            m["disparities"] += metrics.disparity_rows(tuned, mm)
                    m["disparities"] += metrics.verification_disparity_rows(tuned)
                if ref_df is not None and ref_thresholds.get(key) is not None and scores.n_impostor:
                    m["reference"]["threshold_transfer"] += _with_dataset(metrics.threshold_transfer(
                        ref_thresholds[key], scores, target_fmr=cfg.target_fmr, n_boot=cfg.n_boot, seed=seed),
                        dataset)
                    m["reference"]["paired_rates"] += _with_dataset(
                        _paired_rates(ref_df, d, gb, ref_thresholds[key], cfg, seed), dataset)
                    paired = ref_df.set_index("sample_id").reindex(d["sample_id"])
                    ref_emb = _embeddings(paired.reset_index())
                    groups = d[gb].astype(str).agg("*".join, axis=1).to_numpy()
                    m["reference"]["drift"] += _with_dataset(metrics.embedding_drift(
                        ref_emb, _embeddings(d), groups, group_by="*".join(gb)), dataset)
                    ref_e = ref_entries.get(ref_id, {})
                    ref_rows = [r for r in ref_e.get("metrics", {}).get("rates", []) if r.get("dataset") == dataset]
                    m["reference"]["retention"] += metrics.retention(
                        [r for r in ref_rows if r.get("threshold_kind") == "fixed"],
                        [r for r in rows if r.get("threshold_kind") == "fixed"])
        if e["task"] == "verification":
            m["identification"] = _identification(e, df, run_dir, doc, cfg, ref_id, ref_dir, ref, is_ref,
                                                  ref_entries, samples, ref_thresholds, ident_cache, searcher,
                                                  device_search)
            if not m["identification"]:
                del m["identification"]
        e["metrics"] = m
        e["acquisition"] = acquisition
        if is_ref:
            ref_entries[e["entry"]] = e
    _score_pipeline_sensitivity(Path(run_dir), doc, groupings_of, cfg)
    return doc


def _score_pipeline_sensitivity(run_dir: Path, doc: dict, groupings_of: dict[str, list[list[str]]], cfg) -> None:
    """doc["pipeline_sensitivity"].models.<model>.rows: harness vs upstream chips per group of each dataset, for
    every grouping of its card (default first)."""
    from harness.metrics.pipeline_sensitivity import by_groupings

    for section in ((doc.get("pipeline_sensitivity") or {}).get("models") or {}).values():
        if section.get("status") != "ok":
            continue
        df = pd.DataFrame.from_records(read_jsonl(run_dir / section["samples"]))
        section["rows"] = []
        for dataset, d in _frames_by_dataset(df).items():
            gbs = [gb for gb in ([g for g in grouping if g in d] for grouping in groupings_of.get(dataset, [])) if gb]
            if gbs:
                section["rows"] += [dict(r, dataset=dataset)
                                    for r in by_groupings(d, groupings=gbs, seed=cfg.seed, n_boot=cfg.n_boot)]


def _reference_variant(model: str) -> str:
    """The model manifest's reference_variant (onnx-fp32 for every shipped model; a model no longer in models/
    keeps the historical default)."""
    from harness import specs
    from harness.errors import UnknownIdError

    try:
        return specs.get_model(model).reference_variant
    except UnknownIdError:  # a run scored where its model's manifest is gone: the old default
        return "onnx-fp32"


def _entry_records(directory: Path, entry: str, ref) -> tuple[Path | None, list[dict]]:
    """(run folder holding embeddings/, raw per-sample records in file order) of an entry of this run or of the
    reference."""
    if ref is not None and ref.path is None:
        return None, ref.samples(entry)
    return Path(directory), read_jsonl(Path(directory) / "samples" / f"{entry}.jsonl")


def _identification(e, df, run_dir, doc, cfg, ref_id, ref_dir, ref, is_ref, ref_entries, samples, ref_thresholds,
                    cache, searcher=None, device_search=None) -> dict:
    """metrics.identification.<dataset> of an embedding entry, for each watchlist dataset of the run
    (harness/watchlist.py). The reference's searches (fp32 gallery x fp32 probes) give the thresholds."""
    from harness import watchlist as wl
    from harness.data.watchlist import WatchlistSplit

    out = {}
    records = {d["id"]: d for d in doc["data"]["datasets"]}
    for dataset, rec in sorted(records.items()):
        if not rec.get("identification"):
            continue
        split = WatchlistSplit.from_dict(dataset, rec["identification"])
        dis_name = split.rules.distractors
        gb = groupings(rec)[0]
        dis_gb = groupings(records[dis_name])[0] if dis_name in records else []

        def frames(frame: pd.DataFrame, emb: np.ndarray):
            own = (frame["dataset"] == dataset).to_numpy()
            dis = (frame["dataset"] == dis_name).to_numpy()
            return (frame[own].reset_index(drop=True), emb[own],
                    frame[dis].reset_index(drop=True) if dis.any() else None, emb[dis] if dis.any() else None)

        path, raw = _entry_records(run_dir, e["entry"], None)
        emb = wl.entry_embeddings(path, e["entry"], df, raw)
        if not len(df) or (df["dataset"] == dataset).sum() == 0:
            continue
        f, f_emb, dis, dis_emb = frames(df, emb)
        key = (e["model"], dataset)
        if key not in cache:
            ref_ok = is_ref or ref_id in ref_entries
            if not ref_ok:
                out[dataset] = {"status": "not_computable", "reason": f"no reference entry {ref_id}"}
                continue
            r_df = df if is_ref else samples(ref_dir, ref_id)
            r_path, r_raw = _entry_records(ref_dir, ref_id, ref if not is_ref else None)
            r_emb = emb if is_ref else wl.entry_embeddings(r_path, ref_id, r_df, r_raw)
            rf, rf_emb, rdis, rdis_emb = frames(r_df, r_emb)
            ref_search = wl.run_searches(rf, rf_emb, rf_emb, split, rdis, rdis_emb, gb, dis_gb, cfg.seed,
                                         searcher=searcher)
            nonmated = (ref_search.probes["role"] == "nonmated").to_numpy()
            tuned = wl.ident.threshold_at_fpir(ref_search.top1[nonmated], int(nonmated.sum()), cfg.target_fpir)
            thresholds = ([{"value": tuned, "kind": "tuned_fpir", "target_fpir": cfg.target_fpir}]
                          if tuned is not None else [])
            if ref_thresholds.get(key) is not None:
                thresholds.append({"value": float(ref_thresholds[key]), "kind": "verification_1to1",
                                   "target_fmr": cfg.target_fmr})
            thresholds += [{"value": float(c), "kind": "fixed"} for c in cfg.cutoffs]
            cache[key] = {"thresholds": thresholds, "search": ref_search, "frames": (rf, rf_emb, rdis, rdis_emb),
                          "decisions": wl.decisions(ref_search, thresholds, gb)}
        c = cache[key]
        thresholds = c["thresholds"]
        own = c["search"] if is_ref else wl.run_searches(f, f_emb, f_emb, split, dis, dis_emb, gb, dis_gb, cfg.seed,
                                                         searcher=searcher)
        if device_search is not None and own.templates is not None:
            gallery_t, probe_t, probe_ids = own.templates
            who = dict(zip(own.probes["sample_id"].astype(str), zip(own.probes["subject"].astype(str),
                                                                    own.probes["_group"].astype(str))))
            e.setdefault("speed", {}).setdefault("search", {})[dataset] = device_search(
                e["entry"], dataset, gallery_t, probe_t, probe_ids, precision=e.get("precision"),
                variant=e.get("variant"), subjects=[who[p][0] for p in probe_ids],
                groups=[who[p][1] for p in probe_ids], group_by="*".join(gb))
        section = {"split": {k: v for k, v in rec["identification"].items()
                             if k not in ("gallery_images", "enrolled_subjects")},
                   "rank_r": wl.RANK_R, "rank_k": wl.RANK_K, "candidates_kept": wl.TOP_K, "thresholds": thresholds,
                   "reference": {"entry": ref_id, "run": doc["run_id"] if is_ref else (ref.run_id if ref else
                                                                                       doc["run_id"])},
                   "n_gallery": own.n_gallery, "n_distractors": own.n_distractors,
                   "n_not_enrolled": own.n_not_enrolled,
                   "own_gallery": wl.rows_at(own, thresholds, gb, n_boot=cfg.n_boot, seed=cfg.seed)}
        if dis_name and dis is None:
            section["distractors_missing"] = f"{dis_name} is not in this run"
        if not is_ref:
            rf, rf_emb, rdis, rdis_emb = c["frames"]
            # the fp32 watchlist searched by this variant's probes: gallery (and distractors) from the reference
            pos = pd.Index(rf["sample_id"]).get_indexer(f["sample_id"])
            gal = np.where((pos >= 0)[:, None], rf_emb[np.maximum(pos, 0)], np.nan) if len(rf) else f_emb * np.nan
            mixed = wl.run_searches(f, f_emb, gal, split, rdis, rdis_emb, gb, dis_gb, cfg.seed,
                                    searcher=searcher)
            section["reference_gallery"] = wl.rows_at(mixed, thresholds, gb, n_boot=cfg.n_boot, seed=cfg.seed)
            section["flips"] = wl.flips(c["decisions"], wl.decisions(mixed, thresholds, gb), gb, "reference_gallery")
            section["flips"] = section.get("flips", []) + wl.flips(c["decisions"], wl.decisions(own, thresholds, gb),
                                                                   gb, "own_gallery")
        out[dataset] = section
    return out
