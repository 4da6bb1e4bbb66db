"""compare(): deltas with Newcombe intervals, environment warnings, the Pareto front."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.commands import compare as compare_cmd
from harness.report.compare import compare, diff_ci, pareto_front
from helpers_results import make_run


def test_pareto_front_hand_made():
    # (latency, worst-group error): (3,4) is dominated by (2,3); the duplicate (2,3) is not strictly dominated.
    pts = [[1, 5], [2, 3], [3, 4], [4, 1], [2, 3], [5, 5]]
    assert pareto_front(pts).tolist() == [True, True, False, True, True, False]
    assert pareto_front([]).tolist() == []
    # a third axis (energy) rescues a point that is worse on the first two
    assert pareto_front([[1, 1, 9], [2, 2, 1]]).tolist() == [True, True]


def test_diff_ci_matches_newcombe_1998_example():
    # Newcombe (1998) Stat Med 17:873, example (a): 56/70 - 48/80 = 0.1833, method 10 CI (0.0524, 0.3339)
    a, b = binomtest(56, 70).proportion_ci(method="wilson"), binomtest(48, 80).proportion_ci(method="wilson")
    lo, hi = diff_ci((48 / 80, b.low, b.high), (56 / 70, a.low, a.high))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_identical_environments_no_warnings_and_deltas(tmp_path):
    a = make_run(tmp_path, latency_ms={"onnx-fp32": 2.0, "onnx-int8": 1.0}, seed=1)
    b = make_run(tmp_path, latency_ms={"onnx-fp32": 3.0, "onnx-int8": 1.0}, seed=2)
    table = compare([a, b])
    assert table.warnings == []
    row = next(r for r in table.rows if r.variant == "onnx-fp32")
    base, new = row.cells
    d = row.deltas[1]
    assert row.deltas[0] is None
    assert d.p90_pct == pytest.approx(100 * (new.p90_ms / base.p90_ms - 1)) and 40 < d.p90_pct < 60
    assert d.overall == pytest.approx(new.overall - base.overall)
    assert d.overall_ci[0] < d.overall < d.overall_ci[1]


def test_environment_differences_warn(tmp_path):
    a = make_run(tmp_path / "a", seed=1)
    b = make_run(tmp_path / "b", seed=2, environment={"cpu": {"model": "ARM Cortex-A76"},
                                                     "runtimes": {"onnxruntime": "1.20.0", "ai_edge_litert": "2.3.0"},
                                                     "git": {"commit": "0123456789abcdef", "dirty": True}},
                 model_sha="f" * 64, manifest_sha="b" * 64)
    b.doc["entries"][0]["backend"]["active"] = ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    w = "\n".join(compare([a, b]).warnings)
    for needle in ("environment cpu.model differs: 'Intel Xeon Test CPU' vs 'ARM Cortex-A76'",
                   "runtimes.onnxruntime differs: '1.31.1' vs '1.20.0'", "dirty git tree",
                   "gender-dlib--onnx-fp32 model sha256 differs", "dataset london-frl manifest sha256 differs",
                   "gender-dlib--onnx-fp32 active provider"):
        assert needle in w, needle
    assert "commit" not in w.replace("uncommitted", "")  # a different commit is the point of comparing


def test_procurement_front_and_cli_json(tmp_path, capsys):
    # int8: faster but loses accuracy on one group; fp32: slower and fairer -> both on the front.
    a = make_run(tmp_path, latency_ms={"onnx-fp32": 4.0, "onnx-int8": 1.0}, drop={"onnx-int8": {"white": 0.3}})
    table = compare([a])
    assert set(table.pareto) == {(a.run_id, "gender-dlib--onnx-fp32"), (a.run_id, "gender-dlib--onnx-int8")}
    b = make_run(tmp_path, latency_ms={"onnx-fp32": 4.0, "onnx-int8": 1.0}, energy_mj={"onnx-fp32": 1, "onnx-int8": 1})
    assert compare([b]).pareto_axes == ("p90_ms", "worst_group_error", "energy_mj")
    # fronts are per model: a slow, error-prone model still has its own best variant on the front
    two = make_run(tmp_path, models=("gender-dlib", "mobilefacenet"), latency_ms={"onnx-fp32": 9.0, "onnx-int8": 8.0})
    assert {e.split("--")[0] for _, e in compare([two]).pareto} == {"gender-dlib", "mobilefacenet"}
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir")
    compare_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["--results-dir", str(tmp_path), "compare", a.run_id, b.run_id, "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in doc["runs"]] == [a.run_id, b.run_id]
    assert doc["rows"][0]["deltas"][1]["p90_pct"] == pytest.approx(0, abs=10)
    args = parser.parse_args(["--results-dir", str(tmp_path), "compare", a.run_id, b.run_id, "--md"])
    assert args.func(args) == 0 and "| model | variant |" in capsys.readouterr().out
    assert np.isfinite(doc["rows"][0]["cells"][0]["p90_ms"])


def test_compare_by_target_takes_the_newest_complete_run_of_each(tmp_path, capsys):
    import time

    from harness.cli import main

    make_run(tmp_path, target="cpu")
    time.sleep(1.1)  # run ids have one-second resolution
    newest_cpu = make_run(tmp_path, target="cpu")
    device = make_run(tmp_path, target="jetson")
    assert main(["compare", "--target", "cpu", "--target", "jetson", "--json", "--results-dir", str(tmp_path)]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["run_id"] for r in runs] == [newest_cpu.run_id, device.run_id]
    assert main(["compare", "--target", "rpi", "--results-dir", str(tmp_path)]) == 2
    assert "no complete run for target 'rpi'" in capsys.readouterr().err


def test_markdown_says_emulated_and_an_invalid_entry_is_never_pareto_optimal(tmp_path):
    from harness.report.html import render_markdown

    emulated = {"emulation": {"emulated": True, "by": "qemu-user 8.2.2", "cpu": "cortex-a72",
                              "board": "Raspberry Pi 4", "rootfs": "k"}}
    # int8 is faster and as fair as fp32: it would dominate, but its measurement is INVALID
    run = make_run(tmp_path, target="rpi", latency_ms={"onnx-fp32": 4.0, "onnx-int8": 1.0}, environment=emulated,
                   invalid={"onnx-int8": ["emulated (qemu-user 8.2.2, -cpu cortex-a72): timings are the emulator's"]})
    assert compare([run]).pareto == [(run.run_id, "gender-dlib--onnx-fp32")]
    md = render_markdown([run])
    assert f"| {run.run_id} | rpi | emulated (qemu-user -cpu cortex-a72): timings are the emulator's" in md
    assert "VALID measurements only: " + f"{run.run_id}:gender-dlib--onnx-fp32\n" in md
    (int8,) = [ln for ln in md.splitlines() if ln.startswith("| gender-dlib | onnx-int8 |")]
    assert "INVALID" in int8 and not int8.rstrip(" |").endswith("yes")
    real = make_run(tmp_path, seed=3)
    assert "real hardware: Intel Xeon Test CPU" in render_markdown([real])
