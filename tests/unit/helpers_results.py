"""Build schema-valid run directories through the real RunWriter, for results/report/gate tests.

Samples carry real ids and demographic labels from ../shared/data/london-frl/labels.csv; the model outcomes are
synthetic (seeded) so a test can plant an effect (e.g. int8 loses accuracy on one group) and check it is reported.
Rate rows use the Wilson interval (scipy) like harness.metrics does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from harness.results import Run, RunStore, load_run

DATA = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
LABELS = DATA / "london-frl" / "labels.csv"
GROUP_COLS = ["gender", "ethnicity"]
TASKS = {"gender-dlib": "gender", "mobilefacenet": "verification", "blazeface": "detection"}


def labels(rename: dict[str, str] | None = None) -> pd.DataFrame:
    df = pd.read_csv(LABELS, dtype=str)
    if rename:
        df[GROUP_COLS] = df[GROUP_COLS].replace(rename)
    return df


def rate_row(metric: str, group_by: str, group: str, k: int, n: int) -> dict[str, Any]:
    ci = binomtest(k, n).proportion_ci(method="wilson") if n else None
    return {"metric": metric, "group_by": group_by, "group": group, "n": int(n), "k": int(k),
            "value": k / n if n else None, "ci_lo": float(ci.low) if ci else None,
            "ci_hi": float(ci.high) if ci else None, "small": n < 30}


def rate_rows(df: pd.DataFrame, metric: str, col: str) -> list[dict[str, Any]]:
    rows = [rate_row(metric, "all", "all", int(df[col].sum()), len(df))]
    for by in (["gender"], ["ethnicity"], GROUP_COLS):
        for key, g in df.groupby(by, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            rows.append(rate_row(metric, "*".join(by), "*".join(key), int(g[col].sum()), len(g)))
    return rows


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _stats(t: np.ndarray) -> dict[str, Any]:
    q = dict(zip(["p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms"], np.percentile(t, [50, 90, 95, 99, 99.9])))
    return {"count": int(t.size), "mean_ms": float(t.mean()), "std_ms": float(t.std()), "min_ms": float(t.min()),
            **{k: float(v) for k, v in q.items()}, "max_ms": float(t.max()),
            "p50_ci_ms": [float(np.percentile(t, 45)), float(np.percentile(t, 55))], "duration_s": float(t.sum() / 1e3)}


def make_run(root: Path, *, target: str = "cpu", models: tuple[str, ...] = ("gender-dlib",),
             variants: tuple[str, ...] = ("onnx-fp32", "onnx-int8"), latency_ms: dict[str, float] | None = None,
             base_accuracy: float = 0.93, drop: dict[str, dict[str, float]] | None = None,
             rename_groups: dict[str, str] | None = None, environment: dict[str, Any] | None = None,
             energy_mj: dict[str, float] | None = None, invalid: dict[str, list[str]] | None = None,
             fmr_boost: dict[str, float] | None = None, model_sha: str | None = None,
             manifest_sha: str = "a" * 64, n_timings: int = 300, seed: int = 0) -> Run:
    """Write one complete run with an entry per model x variant and return it loaded back.

    drop: variant -> {ethnicity: accuracy loss}; latency_ms: variant -> median latency; fmr_boost: variant ->
    extra FMR on the 'black' ethnicity (verification); invalid: variant -> validity reasons.
    """
    rng = np.random.default_rng(seed)
    lab = labels(rename_groups)
    env = {"cpu": {"model": "Intel Xeon Test CPU"}, "runtimes": {"onnxruntime": "1.31.1", "ai_edge_litert": "2.3.0"},
           "git": {"commit": "0123456789abcdef", "dirty": False}, **(environment or {})}
    store = RunStore(root)
    writer = store.create({"target": target, "settings": {"seed": seed, "sources": {"seed": "default"}},
                           "environment": env,
                           "data": {"datasets": [{"id": "london-frl", "root": str(LABELS.parent),
                                                  "manifest_sha256": manifest_sha, "n": len(lab),
                                                  "group_columns": GROUP_COLS}]},
                           "reference": {"target": "cpu", "variant": variants[0]}})
    entries = []
    with writer:
        for model in models:
            task = TASKS[model]
            ref_rows: list[dict[str, Any]] | None = None
            for variant in variants:
                entry_id = f"{model}--{variant}"
                df = lab.copy()
                p = base_accuracy - df["ethnicity"].map((drop or {}).get(variant, {})).fillna(0.0).to_numpy()
                df["correct"] = rng.random(len(df)) < p
                records = [{"sample_id": f"london-frl/{r.image}", "dataset": "london-frl", "image": r.image,
                            "subject": r.subject, "gender": r.gender, "ethnicity": r.ethnicity, "status": "ok",
                            "fta_reason": None, "infer_ms": 1.0, "correct": bool(r.correct)}
                           for r in df.itertuples()]
                writer.append_samples(entry_id, records)
                lat = (latency_ms or {}).get(variant, 2.0)
                timings = lat * rng.lognormal(0.0, 0.05, n_timings)
                writer.write_array("timings", entry_id, timings)
                if task == "verification":
                    fmr = []
                    for by, col in (("all", None), ("ethnicity", "ethnicity")):
                        groups = [("all", len(df))] if col is None else list(df.groupby(col).size().items())
                        for g, n in groups:
                            pairs = n * 40
                            rate = 0.001 + ((fmr_boost or {}).get(variant, 0.0) if g == "black" else 0.0)
                            fmr.append(rate_row("fmr", by, g, int(round(rate * pairs)) + 1, pairs))
                    tuned = {"threshold": 0.42, "threshold_kind": "tuned", "target_fmr": 0.001}
                    fnmr = rate_rows(df.assign(m=~df["correct"]), "fnmr", "m")
                    # harness.metrics also reports rates at fixed cut-offs: context rows a headline must ignore
                    fixed = [{**r, "value": 1.0, "k": r["n"], "threshold": 0.99, "threshold_kind": "fixed",
                              "target_fmr": None} for r in fnmr]
                    rates = [{**r, **tuned} for r in fmr + fnmr] + fixed
                    writer.write_array("embeddings", entry_id, rng.normal(size=(len(df), 8)).astype(np.float32))
                else:
                    rates = rate_rows(df, "accuracy", "correct")
                metric_rows = [r for r in rates if r["metric"] != "fmr" and r.get("threshold_kind") != "fixed"]
                disp = []
                for metric in sorted({r["metric"] for r in rates}):
                    vals = np.array([r["value"] for r in rates if r["metric"] == metric and r["group_by"] == "ethnicity"
                                     and r.get("threshold_kind") != "fixed"])
                    disp.append({"metric": metric, "group_by": "ethnicity", "summary": "max_geomean",
                                 "value": float(vals.max() / np.exp(np.log(np.maximum(vals, 1e-6)).mean())), "n_groups": int(vals.size),
                                 "underpowered": False})
                reference: dict[str, Any] = {}
                if ref_rows is None:
                    ref_rows = rates
                else:
                    ref = {(r["metric"], r["group_by"], r["group"]): r["value"] for r in ref_rows
                           if r.get("threshold_kind") != "fixed"}
                    reference["deltas"] = [{"metric": r["metric"], "group_by": r["group_by"], "group": r["group"],
                                            "delta": r["value"] - ref[(r["metric"], r["group_by"], r["group"])]}
                                           for r in metric_rows]
                    # the formats of harness.metrics.precision_loss.retention / threshold_transfer
                    reference["retention"] = [{"metric": r["metric"], "group_by": r["group_by"], "group": r["group"],
                                               "ref_value": ref[(r["metric"], r["group_by"], r["group"])],
                                               "var_value": r["value"],
                                               "retention": _ratio(r["value"], ref[(r["metric"], r["group_by"],
                                                                                    r["group"])])}
                                              for r in metric_rows]
                    worst = min((x for x in reference["retention"] if x["group"] != "all" and x["retention"]),
                                key=lambda x: x["retention"])
                    reference["retention"].append({**worst, "group": "worst", "worst_group": worst["group"]})
                    if task == "verification":
                        reference["threshold_transfer"] = [
                            {"metric": r["metric"], "group_by": r["group_by"], "group": r["group"], "n": r["n"],
                             "ref_threshold": 0.42, "var_threshold": 0.45, "target_fmr": 0.001,
                             "value_at_ref_threshold": r["value"], "ci_lo_at_ref_threshold": r["ci_lo"],
                             "ci_hi_at_ref_threshold": r["ci_hi"],
                             "value_at_var_threshold": ref[(r["metric"], r["group_by"], r["group"])],
                             "change": r["value"] - ref[(r["metric"], r["group_by"], r["group"])]}
                            for r in rates if r["group_by"] == "ethnicity" and r.get("threshold_kind") != "fixed"]
                sha = model_sha or hashlib.sha256(f"{model}{variant}".encode()).hexdigest()
                entries.append({
                    "entry": entry_id, "model": model, "task": task, "variant": variant,
                    "format": variant.split("-")[0], "precision": variant.split("-")[1], "status": "ok", "reason": None,
                    "model_sha256": sha,
                    "backend": {"runtime": "onnxruntime", "version": "1.31.1", "requested": "CPUExecutionProvider",
                                "active": ["CPUExecutionProvider"]},
                    "speed": {"init_ms": 10.0, "first_inference_ms": 5.0, "single_stream": _stats(timings),
                              "offline": {"throughput_ips": 1000.0 / lat, "batch": 1, "threads": 1, "count": 100,
                                          "duration_s": 1.0},
                              "energy_mj_per_inference": (energy_mj or {}).get(variant),
                              "validity": {"status": "INVALID" if (invalid or {}).get(variant) else "VALID",
                                           "reasons": (invalid or {}).get(variant, [])}},
                    "acquisition": {"n": len(df), "fta": 0, "by_reason": {}, "by_group": []},
                    "metrics": {"rates": rates, "disparities": disp, "reference": reference},
                })
        doc = writer.read_run_json()
        doc.update(entries=entries, status="complete", finished_utc=doc["created_utc"])
        writer.write_run_json(doc)
    return load_run(writer.path)
