"""`bench run` end to end on the cpu target with the real packs and data: the run directory contract, corrupt
images counted as failures-to-acquire in the right groups, and a SIGKILLed run resumed to the same results."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "gender-dlib"
VARIANTS = ("onnx-fp32", "onnx-int8")
ENTRIES = tuple(f"{MODEL}--{v}" for v in VARIANTS)
FAST = ["--min-duration", "0.2", "--min-count", "20", "--bootstrap", "100"]


def run_args(built_packs: Path, data_root: Path, results: Path, *extra: str) -> list[str]:
    args = ["run", "--target", "cpu", "--model", MODEL]
    for v in VARIANTS:
        args += ["--variant", v]
    return args + FAST + ["--results-dir", str(results), "--cache-dir", str(built_packs),
                          "--data-root", str(data_root), "--no-build", *extra]


def bench(argv: list[str]) -> tuple[int, str, str]:
    """main() with stdout/stderr captured (usable from module-scoped fixtures, where capsys is not)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def comparable(records: list[dict]) -> list[dict]:
    """Per-sample records without timing fields (they differ run to run), in sample_id order."""
    return sorted(({k: v for k, v in r.items() if not k.endswith("_ms")} for r in records),
                  key=lambda r: r["sample_id"])


@pytest.fixture(scope="module")
def small_run(built_packs, data_root, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    code, out, err = bench(run_args(built_packs, data_root, results))
    lines = out.strip().splitlines()
    run_dir = Path(lines[-1]) if lines else None
    doc = json.loads((run_dir / "run.json").read_text()) if run_dir and (run_dir / "run.json").is_file() else {}
    return {"code": code, "out": out, "err": err, "dir": run_dir, "doc": doc, "results": results}


def entry(doc: dict, entry_id: str) -> dict:
    return next(e for e in doc["entries"] if e["entry"] == entry_id)


def test_run_exits_zero_and_prints_the_run_dir_last(small_run):
    assert small_run["code"] == 0, small_run["err"][-2000:]
    assert small_run["dir"].parent == small_run["results"] and small_run["dir"].is_dir()
    assert small_run["dir"].name == small_run["doc"]["run_id"]


def test_run_json_contract(small_run):
    doc = small_run["doc"]
    assert doc["schema_version"] == 1 and doc["status"] == "complete" and doc["finished_utc"]
    assert doc["target"]["id"] == "cpu"
    assert [e["entry"] for e in doc["entries"]] == list(ENTRIES)
    for e in doc["entries"]:
        assert e["status"] == "ok", e.get("reason")
        assert e["backend"]["active"][0] == "CPUExecutionProvider" and e["backend"]["requested"] == "CPUExecutionProvider"
        ss = e["speed"]["single_stream"]
        assert 0 < ss["p50_ms"] <= ss["p90_ms"]
        lo, hi = ss["p50_ci_ms"]
        assert lo <= ss["p50_ms"] <= hi
        assert ss["count"] >= 20 and ss["duration_s"] >= 0.2
        assert e["speed"]["offline"]["throughput_ips"] > 0
        assert e["speed"]["memory"]["rss_peak_mb"] > 0
        assert e["speed"]["validity"]["status"] in ("VALID", "INVALID")
        assert len(e["model_sha256"]) == 64


def test_acquisition_rate_rows(small_run):
    for e in small_run["doc"]["entries"]:
        acq = e["acquisition"]
        # Every evaluated image of both datasets (the calibration images already taken out) is accounted for.
        assert acq["n"] == sum(d["n_evaluated"] for d in small_run["doc"]["data"]["datasets"]) == 204 + 572 - 64
        rows = acq["by_group"]
        assert rows and {r["dataset"] for r in rows} == {"london-frl", "fairface-sample"}
        for r in rows:
            assert r["metric"] == "fta_rate" and 0 <= r["ci_lo"] <= r["value"] <= r["ci_hi"] <= 1
        overall = [r for r in rows if r["group"] == "all"]
        assert sum(r["k"] for r in overall) == acq["fta"] == sum(acq["by_reason"].values())


def test_accuracy_rows_per_group_for_both_datasets(small_run):
    expected_groups = {"london-frl": "ethnicity*gender", "fairface-sample": "race*gender"}
    for e in small_run["doc"]["entries"]:
        acc = [r for r in e["metrics"]["rates"] if r["metric"] == "accuracy"]
        for dataset, group_by in expected_groups.items():
            rows = [r for r in acc if r["dataset"] == dataset]
            groups = {r["group"] for r in rows}
            assert "all" in groups and len(groups) >= 5, f"{e['entry']} {dataset}: {groups}"
            assert {r["group_by"] for r in rows} == {group_by}
            for r in rows:
                assert 0 <= r["k"] <= r["n"] and r["ci_lo"] <= r["value"] <= r["ci_hi"]
        fairface_groups = {r["group"] for r in acc if r["dataset"] == "fairface-sample"} - {"all"}
        assert len(fairface_groups) == 14  # 7 races x 2 genders


def test_settings_record_where_each_setting_came_from(small_run):
    sources = small_run["doc"]["settings"]["sources"]
    assert sources["min_duration_s"] == "flag" and sources["min_count"] == "flag"
    assert sources["cache_dir"] == "flag" and sources["results_dir"] == "flag"
    assert sources["target"] == "flag"


def test_int8_is_compared_with_the_fp32_reference(small_run):
    ref = entry(small_run["doc"], f"{MODEL}--onnx-int8")["metrics"]["reference"]
    assert ref["entry"] == f"{MODEL}--onnx-fp32" and ref["run"] == small_run["doc"]["run_id"]
    for key in ("deltas", "retention", "flips"):
        assert ref[key], f"int8 metrics.reference.{key} is empty"
    assert {r["dataset"] for r in ref["deltas"]} == {"london-frl", "fairface-sample"}


def test_timings_match_single_stream_count(small_run):
    for e in small_run["doc"]["entries"]:
        t = np.load(small_run["dir"] / "timings" / f"{e['entry']}.npy")
        assert t.dtype == np.float64 and len(t) == e["speed"]["single_stream"]["count"]
        assert np.isclose(np.median(t), e["speed"]["single_stream"]["p50_ms"])


def test_samples_one_line_per_evaluated_image(small_run, data_root):
    from harness.data.dataset import load_dataset
    from harness.data.splits import calibration_split

    doc = small_run["doc"]
    london = load_dataset("london-frl", data_root)
    fairface = load_dataset("fairface-sample", data_root)
    calib = doc["models"][MODEL]["calibration"]
    split = calibration_split(fairface, seed=calib["seed"], size=calib["size_requested"], mix=calib["mix"])
    assert split.sha256 == calib["sha256"] and len(split.images) == 64
    calib_ids = {fairface.sample_id(i) for i in split.images}
    expected = {london.sample_id(i) for i in london.frame["image"]} | \
        {fairface.sample_id(i) for i in fairface.frame["image"]} - calib_ids
    for eid in ENTRIES:
        records = read_jsonl(small_run["dir"] / "samples" / f"{eid}.jsonl")
        ids = [r["sample_id"] for r in records]
        assert len(ids) == len(set(ids)), f"{eid}: duplicate sample ids"
        assert set(ids) == expected
        assert not set(ids) & calib_ids, "calibration images must never be scored"
        for r in records:
            assert r["status"] in ("ok", "fta")
            if r["status"] == "ok":
                assert r["pred"] in ("female", "male") and r["correct"] == (r["pred"] == r["label"])


def copy_london_subset(data_root: Path, dest: Path) -> tuple[str, str, dict[str, str]]:
    """12 London rows (6 subjects, both genders, two ethnicities) + their images; one image truncated and one
    emptied. Returns (truncated image, emptied image, image -> "ethnicity*gender")."""
    src = data_root / "london-frl"
    labels = pd.read_csv(src / "labels.csv", dtype=str)
    picks = []
    for (eth, gender), n in {("white", "female"): 2, ("white", "male"): 2, ("black", "female"): 1,
                             ("black", "male"): 1}.items():
        subjects = labels[(labels["ethnicity"] == eth) & (labels["gender"] == gender)]["subject"].unique()[:n]
        picks += list(subjects)
    subset = labels[labels["subject"].isin(picks)]
    assert len(subset) == 12
    dest.mkdir()
    subset.to_csv(dest / "labels.csv", index=False)
    for image in subset["image"]:
        (dest / image).parent.mkdir(parents=True, exist_ok=True)
        (dest / image).write_bytes((src / image).read_bytes())
    group = {r.image: f"{r.ethnicity}*{r.gender}" for r in subset.itertuples()}
    truncated = subset[(subset["ethnicity"] == "black") & (subset["gender"] == "male")]["image"].iloc[0]
    emptied = subset[(subset["ethnicity"] == "white") & (subset["gender"] == "female")]["image"].iloc[0]
    data = (dest / truncated).read_bytes()
    (dest / truncated).write_bytes(data[: len(data) // 3])
    (dest / emptied).write_bytes(b"")
    return truncated, emptied, group


def test_corrupt_images_are_counted_in_their_groups(built_packs, data_root, tmp_path):
    truncated, emptied, group = copy_london_subset(data_root, tmp_path / "london-copy")
    code, out, err = bench(["run", "--target", "cpu", "--model", MODEL, "--variant", "onnx-fp32",
                            "--dataset", str(tmp_path / "london-copy"), *FAST, "--results-dir", str(tmp_path / "res"),
                            "--cache-dir", str(built_packs), "--data-root", str(data_root), "--no-build"])
    assert code == 0, err[-2000:]
    run_dir = Path(out.strip().splitlines()[-1])
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["status"] == "complete"
    e = entry(doc, f"{MODEL}--onnx-fp32")
    assert e["status"] == "ok", e.get("reason")
    acq = e["acquisition"]
    assert acq["n"] == 12 and acq["fta"] == 2
    assert acq["by_reason"] == {"decode_error": 1, "empty_file": 1}
    rows = {r["group"]: r for r in acq["by_group"]}
    assert rows["all"]["k"] == 2 and rows["all"]["n"] == 12
    assert rows[group[truncated]]["k"] == 1 and rows[group[emptied]]["k"] == 1
    for g, r in rows.items():
        if g not in ("all", group[truncated], group[emptied]):
            assert r["k"] == 0, f"{g} has failures it should not have"
    records = {r["image"]: r for r in read_jsonl(run_dir / "samples" / f"{MODEL}--onnx-fp32.jsonl")}
    assert records[truncated]["fta_reason"] == "decode_error" and records[emptied]["fta_reason"] == "empty_file"
    assert all(r["status"] == "ok" for img, r in records.items() if img not in (truncated, emptied))


def test_killed_run_resumes_to_the_same_results(small_run, built_packs, data_root, tmp_path):
    results = tmp_path / "res"
    argv = run_args(built_packs, data_root, results)
    # Own session: SIGKILL to the group takes the entry's worker process down with the parent, like a power cut.
    proc = subprocess.Popen([sys.executable, "-m", "harness", *argv], cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines_at_kill = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(results.glob("*/samples/*.jsonl"))
            if any(f.stat().st_size > 0 for f in files):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        lines_at_kill = {f.name: f.read_bytes().count(b"\n") for f in results.glob("*/samples/*.jsonl")}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run_dir,) = [p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "partial"
    print(f"\nkilled with {lines_at_kill} sample lines written")

    code, out, err = bench(run_args(built_packs, data_root, results, "--resume", run_dir.name))
    assert code == 0, err[-2000:]
    assert Path(out.strip().splitlines()[-1]) == run_dir
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["status"] == "complete"
    full = small_run["doc"]
    for eid in ENTRIES:
        records = read_jsonl(run_dir / "samples" / f"{eid}.jsonl")
        ids = [r["sample_id"] for r in records]
        assert len(ids) == len(set(ids)), f"{eid}: duplicate sample ids after resume"
        assert comparable(records) == comparable(read_jsonl(small_run["dir"] / "samples" / f"{eid}.jsonl"))
        assert entry(resumed, eid)["status"] == "ok"
        assert entry(resumed, eid)["metrics"]["rates"] == entry(full, eid)["metrics"]["rates"]


def test_without_a_terminal_progress_goes_out_as_plain_lines(cache_dir, data_root, tmp_path):
    """Issue 16: with output to a file `bench run` printed nothing for 15 minutes. Now, stderr being a file, the
    acquisition stage, the model variants and each entry's samples print start/end lines (and at most one line
    per 15 s of each in between)."""
    if not (cache_dir / "packs" / MODEL / "onnx-fp32.onnx").is_file():
        pytest.skip(f"{MODEL} onnx-fp32 is not built in {cache_dir} (bench models build --model {MODEL})")
    argv = ["run", "--target", "cpu", "--model", MODEL, "--variant", "onnx-fp32", "--dataset", "london-frl",
            "--limit", "6", "--threads", "1", "--min-duration", "0.1", "--min-count", "5", "--bootstrap", "20",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(cache_dir), "--data-root",
            str(data_root), "--no-build"]
    with open(tmp_path / "stderr.txt", "w") as err_file:
        done = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=err_file, text=True, timeout=600)
    err = (tmp_path / "stderr.txt").read_text()
    assert done.returncode == 0, err[-2000:]
    lines = [x for x in err.splitlines() if x.startswith("progress: ")]
    assert "progress: decode, detect, align: started, 6 to do" in lines
    assert any(x.startswith("progress: decode, detect, align: 6/6 done, elapsed ") for x in lines)
    assert "progress: model variants: started, 1 to do" in lines
    assert any(x.startswith("progress: model variants: 1/1 done") for x in lines)
    entry_lines = [x for x in lines if x.startswith(f"progress: {MODEL}--onnx-fp32 samples: ")]
    assert entry_lines[0].startswith(f"progress: {MODEL}--onnx-fp32 samples: started, ")
    assert entry_lines[-1].endswith(" s") and " done, elapsed " in entry_lines[-1]
    assert "\x1b[" not in err  # no terminal control sequences in a file
