"""Cross-ISA precision loss: the same model pack (same sha256) on the same inputs, on two instruction sets.

int8 kernels and graph optimisations differ by ISA (onnxruntime's MLAS picks other kernels and fuses other QDQ
patterns on aarch64 than on x86-64; XNNPACK has per-ISA microkernels), so one pack can give different outputs and
different decisions on a Raspberry Pi than on the workstation it was validated on. Per entry this module reports:
the largest absolute output difference, decision flips per group with the exact McNemar test, embedding cosine
per group, and FMR/FNMR per group at the fp32 threshold on both sides. The "reference" side is the x86 run.

The same functions answer the within-ISA question (two x86 CPUs whose int8 kernel paths differ,
harness/kernel_path.py): `bench compare A B --drift` (harness/report/drift.py) calls cross_isa_runs with run A as
the reference side. Each block records both sides' arch and int8 kernel path.

Pure numpy/pandas; the pairing and the tests are precision_loss.py's (decision_flips, embedding_drift).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from harness.errors import InputError
from harness.metrics.inputs import ALL, as_2d_float, same_length
from harness.metrics.precision_loss import decision_flips, embedding_drift
from harness.metrics.search import similarity, unit_grid
from harness.metrics.verification import pair_scores, per_group_error_rates

SHAPE_DIFFERS = "max_abs_diff: output '{name}' has shape {a} on one side and {b} on the other"
NO_COMMON_OUTPUT = "max_abs_diff: no output name on both sides (reference: {a}; device: {b})"


def max_abs_diff(ref: Mapping[str, np.ndarray], dev: Mapping[str, np.ndarray]) -> dict:
    """Per output name (and overall): the largest |ref - dev| over elements finite on both sides, with the number
    of elements compared and of elements that differ at all. Arrays must be aligned (same sample order)."""
    names = [n for n in ref if n in dev]
    if not names:
        raise InputError(NO_COMMON_OUTPUT.format(a=", ".join(ref) or "(none)", b=", ".join(dev) or "(none)"))
    per: dict[str, dict] = {}
    for name in names:
        a, b = np.asarray(ref[name], np.float64), np.asarray(dev[name], np.float64)
        if a.shape != b.shape:
            raise InputError(SHAPE_DIFFERS.format(name=name, a=a.shape, b=b.shape))
        both = np.isfinite(a) & np.isfinite(b)
        d = np.abs(a[both] - b[both])
        per[name] = {"max_abs_diff": float(d.max()) if d.size else None, "n": int(d.size),
                     "n_differ": int((d > 0).sum())}
    vals = [p["max_abs_diff"] for p in per.values() if p["max_abs_diff"] is not None]
    return {"max_abs_diff": max(vals) if vals else None, "outputs": per}


def pair_decisions(emb: np.ndarray, subjects: Sequence, groups: Sequence, threshold: float) -> pd.DataFrame:
    """Every pair of rows (i < j) whose rows are both finite, as one row each: pair id "i-j", its group (the
    common group of a same-group pair, "a|b" for a cross-group one), genuine or not, the cosine score (the
    exact grid score of harness.metrics.search, as verification's pair_scores computes it), and whether
    the decision at `threshold` is right. A match is score > threshold, as in harness.metrics.verification
    (FMR = #{impostor > t} / #impostor), so genuine pairs are right above it and impostor pairs at or below it."""
    e = as_2d_float(emb, "pair_decisions")
    same_length("pair_decisions", emb=e, subjects=subjects, groups=groups)
    ok = np.isfinite(e).all(axis=1)
    idx = np.flatnonzero(ok)
    unit = unit_grid(np.asarray(emb, np.float64)[idx])
    i, j = np.triu_indices(idx.size, k=1)
    score = similarity(unit, unit)[i, j]  # the scorer's exact score, the one pair_scores files for this pair
    subj = np.asarray(subjects, dtype=object).astype(str)[idx]
    grp = np.asarray(groups, dtype=object).astype(str)[idx]
    genuine = subj[i] == subj[j]
    pair_group = [a if a == b else "|".join(sorted((a, b))) for a, b in zip(grp[i], grp[j])]
    return pd.DataFrame({"sample_id": [f"{a}-{b}" for a, b in zip(idx[i], idx[j])], "group": pair_group,
                         "genuine": genuine, "score": score,
                         "correct": np.where(genuine, score > threshold, score <= threshold)})


def error_rates_both(ref_emb: np.ndarray, dev_emb: np.ndarray, subjects: Sequence, groups: Sequence, *,
                     threshold: float, group_by: str) -> list[dict]:
    """FNMR and same-group FMR per group at one threshold (the x86 fp32 one) on both sides, one row per
    (metric, group) with n, errors and value per side and the change (device - reference)."""
    out = []
    sides = []
    for emb in (ref_emb, dev_emb):
        e = as_2d_float(emb, "error_rates_both")
        ok = np.isfinite(e).all(axis=1)
        s = pair_scores(e[ok], np.asarray(subjects, dtype=object)[ok], np.asarray(groups, dtype=object)[ok],
                        group_by=group_by)
        sides.append({(r["metric"], r["group"]): r for r in per_group_error_rates(s, threshold=threshold)
                      if r["metric"] in ("fmr", "fnmr")})
    ref, dev = sides
    for key in sorted(set(ref) | set(dev), key=lambda k: (k[0], k[1] != ALL, k[1])):
        r, d = ref.get(key), dev.get(key)
        rv = r["value"] if r else None
        dv = d["value"] if d else None
        out.append({"metric": key[0], "group_by": group_by, "group": key[1], "threshold": float(threshold),
                    "n": (r or d)["n"], "ref_k": r["k"] if r else None, "dev_k": d["k"] if d else None,
                    "ref_value": rv, "dev_value": dv,
                    "change": None if rv is None or dv is None else dv - rv})
    return out


def cross_isa_entry(ref_df: pd.DataFrame, dev_df: pd.DataFrame, *, task: str, group_by: Sequence[str],
                    ref_outputs: Mapping[str, np.ndarray], dev_outputs: Mapping[str, np.ndarray],
                    decision_cols: Sequence[str] = (), threshold: float | None = None) -> dict:
    """One model variant, reference ISA against device ISA, over the samples of both per-sample frames.

    ref_df / dev_df: per-sample records (sample_id, group columns, decision columns such as "correct" or
    "det_hit", "embedding" and "subject" for verification). ref_outputs / dev_outputs: the numeric outputs to
    diff, aligned with each other. For verification, `threshold` is the fp32 threshold of the reference side:
    pair decisions at it are flipped or not, and FMR/FNMR per group are reported on both sides.
    """
    gb = list(group_by)
    gb_name = "*".join(gb)
    out: dict = {"task": task, "group_by": gb_name, "n_ref": int(len(ref_df)), "n_dev": int(len(dev_df)),
                 **max_abs_diff(ref_outputs, dev_outputs), "flips": [], "drift": [], "error_rates": []}
    for col in decision_cols:
        if col in ref_df and col in dev_df and ref_df[col].notna().any():
            out["flips"] += decision_flips(ref_df, dev_df, col, gb)
    if task == "verification":
        paired = ref_df.merge(dev_df[["sample_id", "embedding"]], on="sample_id", suffixes=("_ref", "_dev"))
        ref_emb, dev_emb = _matrix(paired["embedding_ref"]), _matrix(paired["embedding_dev"])
        groups = paired[gb].astype(str).agg("*".join, axis=1).to_numpy()
        subjects = paired["subject"].astype(str).to_numpy()
        out["drift"] = embedding_drift(ref_emb, dev_emb, groups, group_by=gb_name)
    if task == "verification" and threshold is not None:
        ref_p = pair_decisions(ref_emb, subjects, groups, threshold)
        dev_p = pair_decisions(dev_emb, subjects, groups, threshold)
        flips = decision_flips(ref_p, dev_p, "correct", ["group"])
        # Cross-group pairs count in "all"; per group, the pairs within the group (as for same-group FMR).
        out["flips"] += [dict(r, metric="pair_correct", group_by=gb_name) for r in flips if "|" not in r["group"]]
        out["error_rates"] = error_rates_both(ref_emb, dev_emb, subjects, groups, threshold=threshold,
                                              group_by=gb_name)
        out["threshold"] = float(threshold)
    return out


def _matrix(col: pd.Series) -> np.ndarray:
    dim = next((len(e) for e in col if isinstance(e, (list, np.ndarray))), 0)
    return np.array([e if isinstance(e, (list, np.ndarray)) else [np.nan] * dim for e in col], np.float64)


# Per task: the recorded numeric outputs that are diffed, and the per-sample decisions whose flips are counted.
# Postprocessing runs on the host with the same code for both runs, so a difference here is the ISA's.
OUTPUT_FIELDS = {"detection": ("det_score", "det_box", "det_kps"), "gender": ("prob_male",),
                 "verification": ("embedding",)}
DECISIONS = {"detection": ("det_found", "det_hit"), "gender": ("correct",), "verification": ()}


def _stack(values: pd.Series) -> np.ndarray:
    """A column of scalars / lists / None (a sample with no output) as one float array, NaN where missing."""
    shape = next((np.shape(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))), ())
    return np.array([np.full(shape, np.nan) if v is None or (isinstance(v, float) and np.isnan(v))
                     else np.asarray(v, np.float64) for v in values], np.float64).reshape(len(values), *shape)


def _arch(doc: Mapping) -> str:
    env = doc.get("device_environment") or doc.get("environment") or {}
    return str((env.get("cpu") or {}).get("arch", "unknown"))


def cross_isa_runs(dev_doc: Mapping, ref_doc: Mapping, load_dev, load_ref) -> dict:
    """Every ok entry of the device run against the same entry of the reference run, per dataset.

    load_dev(entry) / load_ref(entry) return that entry's per-sample frame. An entry is compared only when both
    ran the same pack (model_sha256); otherwise it is listed under "skipped" with the reason. The verification
    threshold is the reference run's fp32 threshold for that model and dataset (what a fielded board inherits), or
    the reference entry's own threshold where that run has no fp32 entry ("threshold_source" says which).
    """
    group_by_of = {d["id"]: list(d["default_group_by"]) for d in dev_doc["data"]["datasets"]}
    ref_entries = {e["entry"]: e for e in ref_doc.get("entries", []) if e.get("status") == "ok"}
    from harness.kernel_path import of_run

    out = {"reference_run": ref_doc.get("run_id"), "reference_arch": _arch(ref_doc), "device_arch": _arch(dev_doc),
           "reference_kernel_path": of_run(ref_doc)["int8"], "device_kernel_path": of_run(dev_doc)["int8"],
           "emulation": (dev_doc.get("device_environment") or {}).get("emulation"), "entries": [], "skipped": []}
    for e in dev_doc.get("entries", []):
        if e.get("status") != "ok":
            continue
        ref = ref_entries.get(e["entry"])
        why = ("not run (ok) in the reference run" if ref is None
               else "a different pack (model_sha256) in the reference run"
               if ref.get("model_sha256") != e.get("model_sha256") else None)
        if why:
            out["skipped"].append({"entry": e["entry"], "reason": why})
            continue
        dev_all, ref_all = load_dev(e["entry"]), load_ref(e["entry"])
        fp32 = ref_entries.get(f"{e['model']}--onnx-fp32", {}).get("metrics", {}).get("verification", {})
        for dataset, dev_df in dev_all.groupby("dataset", sort=True):
            ref_df = ref_all[ref_all["dataset"] == dataset]
            gb = [g for g in group_by_of.get(dataset, []) if g in dev_df.columns]
            paired = ref_df.merge(dev_df[["sample_id", *[c for c in OUTPUT_FIELDS[e["task"]] if c in dev_df]]],
                                  on="sample_id", suffixes=("_ref", "_dev"))
            fields = [c for c in OUTPUT_FIELDS[e["task"]] if f"{c}_ref" in paired]
            if paired.empty or not fields:
                out["skipped"].append({"entry": e["entry"], "dataset": dataset, "reason": "no paired samples"})
                continue
            ref_out = {c: _stack(paired[f"{c}_ref"]) for c in fields}
            dev_out = {c: _stack(paired[f"{c}_dev"]) for c in fields}
            # The fp32 threshold of the reference run; without an fp32 entry there, the reference entry's own.
            threshold, source = (fp32.get(dataset) or {}).get("threshold"), "fp32"
            if threshold is None:
                own = ((ref.get("metrics") or {}).get("verification") or {}).get(dataset) or {}
                threshold, source = own.get("threshold"), "reference entry"
            has_pairs = e["task"] != "verification" or ("subject" in ref_df and ref_df["subject"].nunique() >= 2)
            row = cross_isa_entry(ref_df.reset_index(drop=True), dev_df.reset_index(drop=True), task=e["task"],
                                  group_by=gb, ref_outputs=ref_out, dev_outputs=dev_out,
                                  decision_cols=DECISIONS[e["task"]], threshold=threshold if has_pairs else None)
            if "threshold" in row:
                row["threshold_source"] = source
            out["entries"].append({"entry": e["entry"], "model": e["model"], "variant": e["variant"],
                                   "dataset": dataset, "model_sha256": e.get("model_sha256"), **row})
    return out
