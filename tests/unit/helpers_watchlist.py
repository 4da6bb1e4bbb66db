"""A fabricated watchlist run folder (synthetic embeddings, no device, no images) for identification tests:
16 people in two groups, three photos each (the front one enrolled), a quarter of the people held out, ten
distractor faces, an fp32 entry and a noisier "int8" one. `scored_run` scores it with the real score_run, so every
identification row (rates, flips, FPIR against gallery size) is the one a real run would write."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.data.watchlist import WatchlistRules, watchlist_split
from harness.results.store import Run, RunStore, load_run
from harness.scenarios.orchestrate import RunConfig
from harness.scoring import score_run


def people(n=16, photos=3, dim=24, seed=0, groups=("a", "b")):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, dim))
    rows, emb = [], []
    for p in range(n):
        for j in range(photos):
            v = centres[p] + 0.4 * rng.standard_normal(dim)
            emb.append(v / np.linalg.norm(v))
            rows.append({"sample_id": f"syn-{p}-{j}", "dataset": "syn", "image": f"{p}_{j}.jpg",
                         "subject": f"p{p:02d}", "view": "front" if j == 0 else "side",
                         "grp": groups[0] if p % 2 else groups[1], "status": "ok", "fta_reason": None})
    for d in range(10):  # distractor faces: no identity
        v = rng.standard_normal(dim)
        emb.append(v / np.linalg.norm(v))
        rows.append({"sample_id": f"dis-{d}", "dataset": "dis", "image": f"d{d}.jpg", "subject": None,
                     "race": "x" if d % 2 else "y", "status": "ok", "fta_reason": None})
    return pd.DataFrame(rows), np.array(emb, np.float32)


def fabricate(root, groups=("a", "b"), condition: dict | None = None, plant=None):
    """`condition`: run.json data.condition (a capture-condition level); `plant(frame, emb) -> (frame, emb)`:
    what that level did to the records and embeddings (both variants)."""
    frame, emb = people(groups=groups)
    if plant is not None:
        frame, emb = plant(frame.copy(), emb.copy())
    syn = frame[frame["dataset"] == "syn"]
    split = watchlist_split("syn", syn, WatchlistRules({"view": ("front",)}, 0.25, "dis"), seed=0,
                            group_by=["grp"], origin="syn")
    cfg = RunConfig(datasets=("syn", "dis"), n_boot=40, cutoffs=(0.0, 0.8))
    doc = {"target": {"id": "cpu", "profile": {}}, "settings": cfg.to_dict(),
           "data": {"datasets": [
               {"id": "syn", "default_group_by": ["grp"], "groupings": [["grp"]], "group_columns": ["grp"],
                "identification": split.to_dict()},
               {"id": "dis", "default_group_by": ["race"], "groupings": [["race"]], "group_columns": ["race"],
                "identification": None}]},
           "reference": {"target": "cpu", "variant": "onnx-fp32", "run": None}}
    if condition is not None:
        doc["data"]["condition"] = condition
    writer = RunStore(root).create(doc)
    noisy = emb + 0.2 * np.random.default_rng(1).standard_normal(emb.shape).astype(np.float32)
    entries = []
    for variant, e in (("onnx-fp32", emb), ("onnx-int8", noisy)):
        eid = f"mobilefacenet--{variant}"
        recs = frame.drop(columns=["view"]).to_dict("records")
        writer.append_samples(eid, recs)
        writer.write_array("embeddings", eid, e)
        entries.append({"entry": eid, "model": "mobilefacenet", "task": "verification", "variant": variant,
                        "status": "ok"})
    doc = writer.read_run_json()
    doc["entries"] = entries
    writer.write_run_json(doc)
    writer.close()
    return writer.path, cfg


def scored_run(root, groups=("a", "b"), device_search=None, condition: dict | None = None, plant=None) -> Run:
    """fabricate(), scored and marked complete, loaded back. `device_search` (a harness.search_job.DeviceSearch)
    also runs each entry's watchlist search on that launcher, as `bench run` does."""
    run_dir, cfg = fabricate(root, groups, condition, plant)
    writer = RunStore(root).open_existing(run_dir.name)
    doc = score_run(run_dir, writer.read_run_json(), cfg, device_search=device_search)
    doc.update(status="complete", finished_utc=doc["created_utc"])
    writer.write_run_json(doc)
    writer.close()
    return load_run(run_dir)


# ---- planted identification rows (the buyer's page verdicts, tests/unit/test_report_buyers_1n.py) ----------------
TUNED_T = 0.5


def rate(metric: str, group: str, k: int, n: int, people: int, value: float, lo: float, hi: float,
         threshold: float = TUNED_T) -> dict:
    """One identification rate row as harness/watchlist.py writes it, at the fp32-tuned threshold."""
    return {"metric": metric, "group_by": "grp", "group": group, "n": n, "k": k, "n_subjects": people,
            "n_units": people, "unit": "subject", "threshold": threshold, "threshold_kind": "tuned_fpir",
            "rank": 1 if metric == "fnir" else None, "value": value, "ci_lo": lo, "ci_hi": hi,
            "ci_method": "subject_bootstrap" if 0 < k < n else "clopper_pearson_upper", "small": people < 30,
            "search_value": k / n}


def flip(metric: str, group: str, b: int, c: int, n: int, p: float, config: str) -> dict:
    return {"metric": metric, "group_by": "grp", "group": group, "n": n, "flips": b + c, "b": b, "c": c,
            "flip_rate": (b + c) / n, "p_value": p, "threshold_kind": "tuned_fpir", "threshold": TUNED_T,
            "config": config}


def planted_entry(variant: str, own: list[dict], *, reference: list[dict] | None = None, flips: list[dict] = (),
                  search: dict | None = None, dataset: str = "views") -> dict:
    """An embedding entry whose watchlist section holds exactly the planted rows: `own` for its own watchlist,
    `reference` for the fp32 watchlist searched by its probes, `flips` against fp32; `search` is its
    speed.search record (harness/search_job.py's shape)."""
    sec = {"thresholds": [{"value": TUNED_T, "kind": "tuned_fpir", "target_fpir": 0.01},
                          {"value": 0.8, "kind": "fixed"}],
           "reference": {"entry": "mobilefacenet--onnx-fp32", "run": "r0"}, "n_gallery": 600, "n_distractors": 100,
           "split": {"n_gallery": 80, "n_mated_probes": 720, "n_nonmated_probes": 180, "gallery_sha256": "0" * 64},
           "own_gallery": {"rates": own}, "flips": list(flips)}
    if reference is not None:
        sec["reference_gallery"] = {"rates": reference}
    entry = {"entry": f"mobilefacenet--{variant}", "model": "mobilefacenet", "variant": variant, "status": "ok",
             "task": "verification", "metrics": {"identification": {dataset: sec}}}
    if search is not None:
        entry["speed"] = {"search": {dataset: search}}
    return entry


def search_record(*sizes: tuple[int, float, str]) -> dict:
    """A speed.search record timed at each (gallery size, p90 ms, validity)."""
    return {"status": "ok", "k": 10, "dim": 128, "n_probes": 900,
            "sizes": [{"size": s, "synthetic": max(0, s - 600),
                       "single_stream": {"count": 500, "p50_ms": p90 / 2, "p90_ms": p90, "p99_ms": p90 * 1.5},
                       "validity": {"status": v, "reasons": [] if v == "VALID" else ["load 6 on 2 cores"]}}
                      for s, p90, v in sizes]}
