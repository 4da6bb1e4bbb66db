"""`bench run --condition` end to end: a two-level sweep on real faces gives one run per level, each recording its
condition and per-sample face quality, and a condition run never serves as another condition's fp32 reference."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.scenarios.orchestrate import find_reference_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_exposure_sweep_one_run_per_level(built_packs: Path, data_root: Path, tmp_path: Path):
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset",
            "fairface-sample", "--limit", "12", "--condition", "exposure:0,-4", "--min-duration", "0.1",
            "--min-count", "5", "--bootstrap", "50", "--threads", "1", "--results-dir", str(tmp_path),
            "--cache-dir", str(built_packs), "--data-root", str(data_root), "--no-build"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()[-2000:]
    run_dirs = [Path(line) for line in out.getvalue().splitlines() if line.startswith(str(tmp_path))]
    assert len(run_dirs) == 2
    docs = [json.loads((d / "run.json").read_text()) for d in run_dirs]
    assert [d["data"]["condition"]["label"] for d in docs] == ["exposure:0", "exposure:-4"]
    assert docs[0]["data"]["condition"]["is_reference"] and docs[1]["data"]["condition"]["sensor"]["full_well_e"]
    # OFIQ: the run says what it used, or why its scores are absent (harness/camera/quality.py), and the samples
    # carry q_ofiq only when OFIQ ran
    from harness.camera.quality import ofiq_status

    assert all(d["data"]["ofiq"] == ofiq_status() for d in docs)
    assert ofiq_status().startswith(("unavailable: ", "OFIQ "))
    rows = [json.loads(line) for line in
            (run_dirs[1] / "samples" / "gender-dlib--onnx-fp32.jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["q_brightness"] is not None and r["condition_ms"] > 0 for r in ok)
    assert all(("q_ofiq" in r) == ofiq_status().startswith("OFIQ ") for r in ok)
    (entry,) = docs[1]["entries"]
    assert entry["quality"]["fairface-sample"]["brightness"]["n"] == len(ok)
    # darker capture, darker faces: the -4 EV run's median face brightness is below the unmodified run's
    (ref_entry,) = docs[0]["entries"]
    assert entry["quality"]["fairface-sample"]["brightness"]["median"] < \
        ref_entry["quality"]["fairface-sample"]["brightness"]["median"]
    # fp32 under the same condition is a condition run's reference; another condition never is
    data = docs[1]["data"]["datasets"]
    assert find_reference_run(tmp_path, data, lambda m: None, condition="exposure:-4") == docs[1]["run_id"]
    assert find_reference_run(tmp_path, data, lambda m: None, condition="exposure:-2") is None


def test_sweep_report_camera_section_agrees_with_drift(built_packs: Path, data_root: Path, tmp_path: Path):
    """A real two-precision sweep (fp32 and XNNPACK int8, 0 and -4 EV on 12 FairFace faces): `bench report` writes
    the camera section, and its per-level counts are --drift's, face for face."""
    from harness.report import camera
    from harness.report.drift import drift
    from harness.results import load_run

    out, err = io.StringIO(), io.StringIO()
    common = ["--results-dir", str(tmp_path), "--cache-dir", str(built_packs), "--data-root", str(data_root)]
    argv = ["run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--variant", "tflite-int8",
            "--dataset", "fairface-sample", "--limit", "12", "--condition", "exposure:0,-4", "--min-duration",
            "0.1", "--min-count", "5", "--bootstrap", "50", "--threads", "1", "--no-build", *common]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()[-2000:]
    run_dirs = [line for line in out.getvalue().splitlines() if line.startswith(str(tmp_path))]
    assert len(run_dirs) == 2
    md, page = tmp_path / "r.md", tmp_path / "r.html"
    for target in (md, page):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            assert main(["report", *run_dirs, "-o", str(target), "--alpha", "0.05", *common]) == 0
    text = md.read_text()
    assert "## Camera: capture-condition sweeps" in text and "-4 EV against 0 EV" in text
    assert "tflite-int8 vs onnx-fp32" in text  # the interaction table
    html_text = page.read_text()
    camera_html = html_text[html_text.index("<h2>Camera</h2>"):html_text.index("<h2>Latency distributions</h2>")]
    assert "<svg" in camera_html and "first level that differs" in camera_html

    ref, lvl = (load_run(d) for d in run_dirs)
    report = camera.camera_report([ref, lvl])
    ((sweep, (block,), _),) = report.sweeps
    assert [lv for lv, _ in sweep.levels] == [-4.0] and sorted(block.variants) == ["onnx-fp32", "tflite-int8"]
    flips = {(e["variant"], f["group"]): f for e in drift(ref, lvl)["entries"] for f in e["flips"]}
    for row in block.first:
        t = row["tests"][-4.0]
        f = flips[(row["variant"], row["group"])]
        assert (t["n"], t["b"], t["c"]) == (f["n"], f["b"], f["c"]) and t["p_value"] == f["p_value"]
    assert {(r["variant"], r["group"]) for r in block.first} == set(flips)


def test_watchlist_sweep_fpir_fnir_at_the_unmodified_fp32_threshold(built_packs: Path, data_root: Path,
                                                                     tmp_path: Path):
    """A real watchlist sweep (mobilefacenet fp32 and int8, 0 and -4 EV on 120 London views images, FairFace
    distractors): the camera section's 1:N block reads FPIR/FNIR per probe group at the unmodified run's fp32-tuned
    threshold, its unmodified rows are that run's own watchlist rows, and its paired tests cover the same searches."""
    from harness.report import camera
    from harness.results import load_run

    if not (data_root / "london-frl-views" / "labels.csv").is_file():
        pytest.skip("london-frl-views not in the shared data")
    out, err = io.StringIO(), io.StringIO()
    common = ["--results-dir", str(tmp_path), "--cache-dir", str(built_packs), "--data-root", str(data_root)]
    argv = ["run", "--target", "cpu", "--model", "mobilefacenet", "--variant", "onnx-fp32", "--variant", "onnx-int8",
            "--dataset", "london-frl-views", "--limit", "120", "--condition", "exposure:0,-4", "--search-sizes",
            "1000", "--min-duration", "0.05", "--min-count", "5", "--bootstrap", "50", "--threads", "1",
            "--no-build", *common]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()[-2000:]
    runs = [load_run(Path(line)) for line in out.getvalue().splitlines() if line.startswith(str(tmp_path))]
    assert len(runs) == 2
    ref = next(r for r in runs if r.doc["data"]["condition"]["is_reference"])
    (_, blocks, _), = camera.camera_report(runs).sweeps
    block = next(b for b in blocks if b.task == "identification")
    fp32 = next(e for e in ref.entries if e["variant"] == "onnx-fp32")
    sec = fp32["metrics"]["identification"]["london-frl-views"]
    tuned = next(t["value"] for t in sec["thresholds"] if t["kind"] == "tuned_fpir")
    assert {r["threshold"] for r in block.curves} == {tuned}
    for x in ref.entries:
        stored = {(r["metric"], r["group"]): r
                  for r in x["metrics"]["identification"]["london-frl-views"]["own_gallery"]["rates"]
                  if r.get("threshold_kind") == "tuned_fpir"}
        mine = [r for r in block.curves if r["variant"] == x["variant"] and r["level"] == 0.0]
        assert {(r["metric"], r["group"]) for r in mine} == set(stored) and len(mine) > 2
        for r in mine:
            want = stored[(r["metric"], r["group"])]
            assert (r["k"], r["n"], r["value"], r["ci_lo"], r["ci_hi"]) == \
                (want["k"], want["n"], want["value"], want["ci_lo"], want["ci_hi"])
    # every group's searches are paired at -4 EV: as many as it has at the unmodified level
    for row in block.first:
        n0 = next(r["n"] for r in block.curves if (r["variant"], r["metric"], r["group"], r["level"])
                  == (row["variant"], row["metric"], row["group"], 0.0))
        assert row["tests"][-4.0]["n"] == n0
    assert {r["metric"] for r in block.first} == {"fpir", "fnir"}
