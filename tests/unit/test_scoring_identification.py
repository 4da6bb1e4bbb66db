"""score_run's identification stage and `bench score` on a fabricated run folder (synthetic embeddings, no
device, no images): the rows come from embeddings/<entry>.npy and the split run.json recorded, fp32 and a
variant, and re-scoring gives the same rows."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.data.watchlist import WatchlistRules, watchlist_split
from harness.results.store import RunStore
from harness.scenarios.orchestrate import RunConfig
from harness.scoring import score_run


def people(n=16, photos=3, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, dim))
    rows, emb = [], []
    for p in range(n):
        for j in range(photos):
            v = centres[p] + 0.4 * rng.standard_normal(dim)
            emb.append(v / np.linalg.norm(v))
            rows.append({"sample_id": f"syn-{p}-{j}", "dataset": "syn", "image": f"{p}_{j}.jpg",
                         "subject": f"p{p:02d}", "view": "front" if j == 0 else "side",
                         "grp": "a" if p % 2 else "b", "status": "ok", "fta_reason": None})
    for d in range(10):  # distractor faces: no identity
        v = rng.standard_normal(dim)
        emb.append(v / np.linalg.norm(v))
        rows.append({"sample_id": f"dis-{d}", "dataset": "dis", "image": f"d{d}.jpg", "subject": None,
                     "race": "x" if d % 2 else "y", "status": "ok", "fta_reason": None})
    return pd.DataFrame(rows), np.array(emb, np.float32)


def fabricate(root):
    frame, emb = people()
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


def test_identification_rows_from_stored_arrays(tmp_path):
    run_dir, cfg = fabricate(tmp_path / "results")
    doc = score_run(run_dir, json.loads((run_dir / "run.json").read_text()), cfg)
    fp32 = doc["entries"][0]["metrics"]["identification"]["syn"]
    int8 = doc["entries"][1]["metrics"]["identification"]["syn"]
    assert fp32["n_gallery"] == 12 + 10 and fp32["n_distractors"] == 10
    kinds = [t["kind"] for t in fp32["thresholds"]]
    assert kinds == ["tuned_fpir", "verification_1to1", "fixed", "fixed"]
    assert int8["thresholds"] == fp32["thresholds"]
    tuned = fp32["thresholds"][0]["value"]
    fpir = next(r for r in fp32["own_gallery"]["rates"]
                if r["metric"] == "fpir" and r["group"] == "all" and r["threshold"] == tuned)
    assert fpir["n"] == 4 * 3 and fpir["k"] <= np.floor(cfg.target_fpir * fpir["n"])
    assert "reference_gallery" not in fp32 and "flips" not in fp32
    assert {r["config"] for r in int8["flips"]} == {"reference_gallery", "own_gallery"}
    # distractors are labelled with their own dataset's groups
    cands = {r["candidate_group"] for r in fp32["own_gallery"]["false_candidates"]}
    assert cands and all(c.split(":")[0] in ("syn", "dis") for c in cands)


def bench(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_bench_score_rescoring_is_stable_and_needs_raw_outputs(tmp_path):
    results = tmp_path / "results"
    run_dir, _ = fabricate(results)
    code, out, err = bench(["--results-dir", str(results), "score", run_dir.name])
    assert code == 0, err
    first = json.loads((run_dir / "run.json").read_text())
    code, out, err = bench(["--results-dir", str(results), "score", run_dir.name])
    again = json.loads((run_dir / "run.json").read_text())
    assert code == 0 and [e["metrics"] for e in again["entries"]] == [e["metrics"] for e in first["entries"]]
    assert "FPIR" in err
    for f in (run_dir / "samples").iterdir():
        f.unlink()
    code, out, err = bench(["--results-dir", str(results), "score", run_dir.name])
    assert code == 2 and "no stored raw outputs" in err and len(err.strip().splitlines()) == 1


def test_embeddings_come_from_the_npy_not_the_records(tmp_path):
    from harness.watchlist import entry_embeddings

    run_dir, _ = fabricate(tmp_path / "results")
    raw = [json.loads(line) for line in (run_dir / "samples" / "mobilefacenet--onnx-fp32.jsonl").open()]
    df = pd.DataFrame(raw).iloc[::-1].reset_index(drop=True)  # any record order: aligned by sample_id
    emb = entry_embeddings(run_dir, "mobilefacenet--onnx-fp32", df, raw)
    stored = np.load(run_dir / "embeddings" / "mobilefacenet--onnx-fp32.npy")
    assert np.array_equal(emb, stored[::-1].astype(np.float64))
    with pytest.raises(KeyError):
        entry_embeddings(run_dir, "mobilefacenet--onnx-fp32", df.assign(sample_id="nope"), raw)
