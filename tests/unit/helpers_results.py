"""Build schema-valid run directories through the real RunWriter and the real scoring, for results/report/gate tests.

Samples carry real ids and demographic labels from ../shared/data/london-frl/labels.csv; the model outcomes are
synthetic (seeded) so a test can plant an effect (e.g. int8 loses accuracy on one group) and check it is reported.
Only the outcomes are planted: every metric row (rates, disparities, retention, deltas, threshold transfer) comes
from harness.scoring.score_run over the per-sample records, as in a real run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.results import Run, RunStore, load_run
from harness.scenarios.orchestrate import RunConfig
from harness.scoring import score_run

DATA = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
LABELS = DATA / "london-frl" / "labels.csv"
GROUP_COLS = ["gender", "ethnicity"]
# Three groupings, as a card's `groupings` gives them: scored in one pass, each row tagged with its group_by.
GROUPINGS = [["ethnicity"], ["gender"], ["gender", "ethnicity"]]
TASKS = {"gender-dlib": "gender", "mobilefacenet": "verification", "blazeface": "detection"}
EMBEDDING_DIM = 32


def labels(rename: dict[str, str] | None = None) -> pd.DataFrame:
    df = pd.read_csv(LABELS, dtype=str)
    if rename:
        df[GROUP_COLS] = df[GROUP_COLS].replace(rename)
    return df


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embeddings(df: pd.DataFrame, rng: np.random.Generator, variant_noise: float, boost: float,
                base: np.random.Generator) -> np.ndarray:
    """One embedding per image: its subject's centre plus per-image noise (genuine cosine about 0.8); `boost`
    pulls every 'black' sample towards one shared direction, raising that group's same-group impostor scores."""
    subjects = sorted(df["subject"].unique())
    centres = dict(zip(subjects, base.normal(size=(len(subjects), EMBEDDING_DIM))))
    shared = base.normal(size=EMBEDDING_DIM)
    image_noise = base.normal(size=(len(df), EMBEDDING_DIM))  # the same for every variant: a paired comparison
    x = np.stack([centres[s] for s in df["subject"]]) + 0.5 * image_noise
    x += variant_noise * rng.normal(size=x.shape)
    x += 40 * boost * np.outer((df["ethnicity"] == "black").to_numpy(), shared)
    return _unit(x)


def _records(df: pd.DataFrame, task: str, outcome: np.ndarray, emb: np.ndarray | None) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(df.itertuples()):
        rec = {"sample_id": f"london-frl/{r.image}", "dataset": "london-frl", "image": r.image,
               "subject": r.subject, "gender": r.gender, "ethnicity": r.ethnicity, "status": "ok",
               "fta_reason": None, "infer_ms": 1.0}
        if task == "gender":
            rec["correct"] = bool(outcome[i])
        elif task == "detection":
            rec.update(det_found=True, det_hit=bool(outcome[i]))
        else:
            rec["embedding"] = emb[i].round(6).tolist()
        out.append(rec)
    return out


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
             manifest_sha: str = "a" * 64, n_timings: int = 300, launcher: dict[str, Any] | None = None,
             seed: int = 0, fidelity: dict[str, dict] | None = None, condition: dict[str, Any] | None = None,
             outcomes: dict[str, np.ndarray] | None = None, brightness: np.ndarray | None = None,
             above_idle: dict[str, dict] | None = None) -> Run:
    """Write one complete run with an entry per model x variant, score it with score_run, return it loaded back.

    drop: variant -> {ethnicity: accuracy (gender) or hit-rate (detection) loss}; latency_ms: variant -> median
    latency; fmr_boost: variant -> strength of the pull that raises the 'black' group's same-group impostor scores
    (verification); invalid: variant -> validity reasons; launcher: run.json's `launcher` block (the board the jobs
    ran on); fidelity: variant -> the pack's fidelity record, as the run plan copies it into the entry;
    condition: run.json's `data.condition` (a capture condition, docs/camera.md) and settings.condition its label;
    outcomes: variant -> the per-image correctness (gender) or hit (detection), one bool per labels.csv row, in
    place of the seeded draw; brightness: each labels.csv row's q_brightness (face-region brightness); above_idle:
    variant -> its speed.energy_above_idle block (harness/metrics/energy.py above_idle). The first
    variant is the reference (fp32).
    """
    rng = np.random.default_rng(seed)
    lab = labels(rename_groups)
    env = {"cpu": {"model": "Intel Xeon Test CPU"}, "runtimes": {"onnxruntime": "1.31.1", "ai_edge_litert": "2.3.0"},
           "git": {"commit": "0123456789abcdef", "dirty": False}, "hostname_sha256": "5eed0f0f5eed0f0f",
           **(environment or {})}
    # Fixed cut-off 0.99: genuine scores sit near 0.8, so FNMR there is 1.0, the decoy a headline must ignore.
    cfg = RunConfig(target=target, seed=seed, n_boot=100, cutoffs=(0.99,), datasets=("london-frl",),
                    condition=None if condition is None else condition["label"])
    store = RunStore(root)
    writer = store.create({"target": target, "settings": cfg.to_dict(), "environment": env,
                           "data": {"datasets": [{"id": "london-frl", "root": str(LABELS.parent),
                                                  "manifest_sha256": manifest_sha, "n": len(lab),
                                                  "n_evaluated": len(lab), "group_columns": GROUP_COLS,
                                                  "default_group_by": GROUPINGS[0], "groupings": GROUPINGS}],
                                    "condition": condition},
                           "reference": {"target": "cpu", "variant": variants[0], "run": None}})
    entries = []
    with writer:
        for model in models:
            task = TASKS[model]
            for variant in variants:
                entry_id = f"{model}--{variant}"
                df = lab.copy()
                p = base_accuracy - df["ethnicity"].map((drop or {}).get(variant, {})).fillna(0.0).to_numpy()
                outcome = rng.random(len(df)) < p
                if variant in (outcomes or {}):
                    outcome = np.asarray(outcomes[variant], bool)
                emb = None
                if task == "verification":
                    emb = _embeddings(df, rng, 0.0 if variant == variants[0] else 0.05,
                                      (fmr_boost or {}).get(variant, 0.0), np.random.default_rng([seed, 7]))
                    writer.write_array("embeddings", entry_id, emb.astype(np.float32))
                recs = _records(df, task, outcome, emb)
                for rec, q in zip(recs, [] if brightness is None else brightness):
                    rec["q_brightness"] = float(q)
                writer.append_samples(entry_id, recs)
                lat = (latency_ms or {}).get(variant, 2.0)
                timings = lat * rng.lognormal(0.0, 0.05, n_timings)
                writer.write_array("timings", entry_id, timings)
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
                })
                if variant in (fidelity or {}):
                    entries[-1]["fidelity"] = fidelity[variant]
                if variant in (above_idle or {}):
                    entries[-1]["speed"]["energy_above_idle"] = above_idle[variant]
        doc = writer.read_run_json()
        doc["entries"] = entries
        if launcher is not None:
            doc["launcher"] = launcher
        doc = score_run(writer.path, doc, cfg)
        doc.update(status="complete", finished_utc=doc["created_utc"])
        writer.write_run_json(doc)
    return load_run(writer.path)


def planted_boards(root: Path) -> list:
    """Three boards' runs with planted effects, for the buyer's page tests: a cpu run measured here; an emulated rpi
    run on other packs whose onnx-int8 drops Black faces (0.6) and raises FMR (0.3) and whose tflite-int8 timings are
    INVALID (thermal throttling); a jetson run without tflite-int8."""
    models, variants = ("gender-dlib", "mobilefacenet"), ("onnx-fp32", "onnx-int8", "tflite-int8")
    cpu = make_run(root, target="cpu", models=models, variants=variants, seed=1)
    cpu.doc["launcher"] = {"kind": "local"}  # measured by bench run here
    rpi = make_run(root, target="rpi", models=models, variants=variants, seed=2, model_sha="b" * 64,
                   latency_ms={"onnx-fp32": 20.0, "onnx-int8": 8.0, "tflite-int8": 60.0},
                   drop={"onnx-int8": {"black": 0.6}}, fmr_boost={"onnx-int8": 0.3},
                   invalid={"tflite-int8": ["thermal throttling"]})
    rpi.doc["launcher"] = {"kind": "ssh", "emulation": {"by": "qemu-user 8.2.2", "cpu": "cortex-a76"}}
    jetson = make_run(root, target="jetson", models=models, variants=variants[:2], seed=3)
    return [cpu, rpi, jetson]
