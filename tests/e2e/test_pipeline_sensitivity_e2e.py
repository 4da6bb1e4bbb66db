"""`bench run` on a FairFace-sample subset: pipeline sensitivity for every group, and `--pipeline upstream` feeding
the gender entry dlib's own chips (the entry's per-sample outputs equal the reference's on the upstream chips)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import EXIT_UNAVAILABLE
from harness.results.schema import schema_errors
from tests.e2e.test_run_e2e import FAST, MODEL, bench, read_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
pytest.importorskip("dlib", reason="the upstream extra is not installed (pip install -e '.[upstream]')")

PER_CELL = 3


@pytest.fixture(scope="module")
def subset(data_root, tmp_path_factory) -> tuple[Path, str]:
    """A manifest dataset over the shared fairface-sample images (no copies): PER_CELL images of each race x gender
    cell plus one row whose file does not exist (a failure to acquire for both pipelines).
    Returns (folder, the missing image)."""
    src = data_root / "fairface-sample"
    labels = pd.read_csv(src / "labels.csv", dtype=str).drop(columns=["md5"])
    picked = labels.groupby(["race", "gender"], sort=True).head(PER_CELL)
    missing = "V1/Black/not-there.jpg"
    picked = pd.concat([picked, pd.DataFrame([{"image": missing, "race": "Black", "gender": "female",
                                               "age_bin": "20s"}])], ignore_index=True)
    dest = tmp_path_factory.mktemp("fairface") / "fairface-subset"
    dest.mkdir()
    picked.to_csv(dest / "manifest.csv", index=False)
    (dest / "card.json").write_text(json.dumps({
        "name": "fairface-subset", "root": str(src), "group_columns": ["race", "gender", "age_bin"],
        "default_group_by": ["race", "gender"], "groupings": [["race", "gender"], ["age_bin", "gender"]]}))
    return dest, missing


def _run(built_packs, data_root, results: Path, dataset: Path, *extra: str) -> tuple[int, str, str, dict, Path]:
    code, out, err = bench(["run", "--target", "cpu", "--model", MODEL, "--variant", "onnx-fp32", "--dataset",
                            str(dataset), "--threads", "1", *FAST, "--results-dir", str(results), "--cache-dir",
                            str(built_packs), "--data-root", str(data_root), "--no-build", *extra])
    run_dir = Path(out.strip().splitlines()[-1]) if code == 0 else None
    doc = json.loads((run_dir / "run.json").read_text()) if run_dir else {}
    return code, out, err, doc, run_dir


@pytest.fixture(scope="module")
def harness_run(built_packs, data_root, subset, tmp_path_factory):
    return _run(built_packs, data_root, tmp_path_factory.mktemp("res"), subset[0])


@pytest.fixture(scope="module")
def upstream_run(built_packs, data_root, subset, tmp_path_factory):
    return _run(built_packs, data_root, tmp_path_factory.mktemp("res"), subset[0], "--pipeline", "upstream")


def _by_sample(path: Path) -> dict[str, dict]:
    return {r["sample_id"]: r for r in read_jsonl(path)}


def test_sensitivity_has_every_group_with_paired_counts(harness_run, subset):
    code, out, err, doc, run_dir = harness_run
    assert code == 0, err[-2000:]
    assert schema_errors(doc) == []
    ps = doc["pipeline_sensitivity"]
    assert ps["status"] == "ok" and ps["pipeline"] == "harness" and doc["settings"]["pipeline"] == "harness"
    assert ps["upstream"]["files"]["shape_predictor_5"]["sha256"].startswith("c4b1e980")
    model = ps["models"][MODEL]
    assert model["status"] == "ok" and model["variant"] == "onnx-fp32"
    rows = {(r["group_by"], r["group"]): r for r in model["rows"]}
    labels = pd.read_csv(subset[0] / "manifest.csv", dtype=str)
    cells = {f"{r.race}*{r.gender}" for r in labels.itertuples()}
    assert {g for gb, g in rows if gb == "race*gender"} == cells | {"all"}
    assert {g for gb, g in rows if gb == "race"} == set(labels["race"])
    # the card's second grouping gets its own rows (issue 16: not only the default), gender only once
    assert {g for gb, g in rows if gb == "age_bin*gender"} == {f"{r.age_bin}*{r.gender}" for r in labels.itertuples()}
    assert {g for gb, g in rows if gb == "age_bin"} == set(labels["age_bin"])
    assert [gb for gb in dict.fromkeys(r["group_by"] for r in model["rows"])] == [
        "race*gender", "race", "gender", "age_bin*gender", "age_bin"]
    overall = rows[("race*gender", "all")]
    assert overall["n_samples"] == len(labels)
    assert overall["fta_harness"] >= 1 and overall["fta_upstream"] >= 1  # the missing image, for both
    assert overall["n"] <= len(labels) - 1 and sum(overall["rects"].values()) == len(labels) - 1
    records = _by_sample(run_dir / model["samples"])
    missing = next(r for r in records.values() if r["image"] == subset[1])
    assert missing["harness_fta_reason"] == "missing_file" and missing["upstream_fta_reason"] == "missing_file"
    for r in model["rows"]:
        paired = [x for x in records.values() if x["dataset"] == r["dataset"] and x["harness_correct"] is not None
                  and x["upstream_correct"] is not None
                  and (r["group"] == "all" or r["group"] == "*".join(x[a] for a in r["group_by"].split("*")))]
        assert r["n"] == len(paired)
        assert r["b"] == sum(x["harness_correct"] and not x["upstream_correct"] for x in paired)
        assert r["c"] == sum(x["upstream_correct"] and not x["harness_correct"] for x in paired)
    assert "pipeline sensitivity" in out


def test_harness_side_equals_the_fp32_entry(harness_run):
    """The host-side reference on the harness chips is the fp32 entry itself: same model, same chips."""
    code, _, err, doc, run_dir = harness_run
    assert code == 0, err[-2000:]
    entry = _by_sample(run_dir / "samples" / f"{MODEL}--onnx-fp32.jsonl")
    ref = _by_sample(run_dir / doc["pipeline_sensitivity"]["models"][MODEL]["samples"])
    assert set(entry) == set(ref)
    for sid, e in entry.items():
        assert (e["status"] == "ok") == ref[sid]["harness_acquired"]
        if e["status"] == "ok":
            assert e["prob_male"] == pytest.approx(ref[sid]["harness_prob_male"], abs=1e-5)


def test_pipeline_upstream_feeds_the_entry_dlibs_chips(upstream_run):
    code, out, err, doc, run_dir = upstream_run
    assert code == 0, err[-2000:]
    assert doc["settings"]["pipeline"] == "upstream" and doc["pipeline_sensitivity"]["pipeline"] == "upstream"
    entry = _by_sample(run_dir / "samples" / f"{MODEL}--onnx-fp32.jsonl")
    ref = _by_sample(run_dir / doc["pipeline_sensitivity"]["models"][MODEL]["samples"])
    for sid, e in entry.items():
        assert (e["status"] == "ok") == ref[sid]["upstream_acquired"]
        if e["status"] == "ok":
            assert e["prob_male"] == pytest.approx(ref[sid]["upstream_prob_male"], abs=1e-5)


def test_without_the_extra_the_run_says_unavailable(built_packs, data_root, subset, tmp_path, monkeypatch):
    from harness import upstream

    monkeypatch.setattr(upstream, "availability", lambda: (False, upstream.UNAVAILABLE))
    code, out, err = bench(["run", "--target", "cpu", "--model", MODEL, "--variant", "onnx-fp32", "--dataset",
                            str(subset[0]), "--pipeline", "upstream", "--results-dir", str(tmp_path / "a"),
                            "--cache-dir", str(built_packs), "--data-root", str(data_root), "--no-build"])
    assert code == EXIT_UNAVAILABLE
    assert err.strip().splitlines()[-1].startswith("bench: error: --pipeline upstream: the upstream pipeline needs")
    code, out, err, doc, _ = _run(built_packs, data_root, tmp_path / "b", subset[0])
    assert code == 0, err[-2000:]
    assert doc["pipeline_sensitivity"]["status"] == "unavailable"
    assert ".[upstream]" in doc["pipeline_sensitivity"]["reason"] and ".[upstream]" in out
