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
from harness.scoring import score_run
from helpers_watchlist import fabricate


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
