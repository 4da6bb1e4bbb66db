"""Trend step detection, DET curves against per_group_error_rates, export, the file:// store and URI choice, and the
procurement page rendered in headless Chromium."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.errors import EXIT_USAGE
from harness.metrics import pair_scores, per_group_error_rates
from harness.metrics.det import group_curves, threshold_grid
from harness.report import buyers
from harness.report.trend import change_points, parse_since, trends
from harness.results.files import FileStore
from harness.results.uri import open_store, redact
from helpers_results import make_run

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    root = tmp_path_factory.mktemp("boards")
    models, variants = ("gender-dlib", "mobilefacenet"), ("onnx-fp32", "onnx-int8")
    cpu = make_run(root, target="cpu", models=models, variants=variants, seed=1)
    rpi = make_run(root, target="rpi", models=models, variants=variants, seed=2,
                   latency_ms={"onnx-fp32": 20.0, "onnx-int8": 8.0}, drop={"onnx-int8": {"black": 0.25}},
                   fmr_boost={"onnx-int8": 0.02}, invalid={"onnx-int8": ["thermal throttling"]})
    return root, cpu, rpi


def test_change_points_find_a_step_and_not_noise():
    rng = np.random.default_rng(0)
    noise = 10 + 0.2 * rng.standard_normal(30)
    assert change_points(noise) == []
    step = noise.copy()
    step[18:] += 2.0  # +20% from the 19th night on
    assert change_points(step) == [18]
    small = noise.copy()
    small[18:] += 0.3  # a real but 3% step: below asv's 5% regression threshold
    assert change_points(small) == []
    outlier = noise.copy()
    outlier[10] = 30  # one bad night is not a step (L1 cost)
    assert change_points(outlier) == []


def test_parse_since():
    from datetime import datetime, timezone

    now = datetime(2026, 3, 31, 12, tzinfo=timezone.utc)
    assert parse_since("30d", now) == "2026-03-01T12:00:00Z"
    assert parse_since("2026-01-02", now) == "2026-01-02"
    assert parse_since(None) is None


def test_trend_over_nightly_runs_flags_the_slowdown(tmp_path):
    from datetime import datetime, timedelta, timezone

    from harness.results import RunStore

    runs = []
    for night in range(8):
        lat = 2.0 if night < 5 else 2.6  # the sixth night is 30% slower
        run = make_run(tmp_path, models=("gender-dlib",), variants=("onnx-fp32",), latency_ms={"onnx-fp32": lat},
                       seed=night, n_timings=200)
        runs.append(run)
    # nightly timestamps, in order
    for i, run in enumerate(runs):
        run.doc["created_utc"] = (datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=i)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    series = trends(runs, "p90_ms")
    assert [(s.target, s.entry) for s in series] == [("cpu", "gender-dlib--onnx-fp32")]
    (step,) = series[0].steps
    assert step.run_id == runs[5].run_id and step.change_pct == pytest.approx(30, abs=6)
    assert RunStore  # the runs above were written through the real store


def test_det_curves_equal_per_group_error_rates():
    rng = np.random.default_rng(3)
    subjects = np.repeat(np.arange(40), rng.integers(1, 6, 40))
    centres = rng.standard_normal((40, 16))
    emb = centres[subjects] + 0.9 * rng.standard_normal((subjects.size, 16))
    groups = np.where(subjects % 3 == 0, "a", np.where(subjects % 3 == 1, "b", "c"))
    scores = pair_scores(emb, subjects.astype(str), groups, group_by="g")
    cut = (0.2, 0.5)
    rows = per_group_error_rates(scores, threshold=0.35, fixed_thresholds=cut, n_boot=10)
    grid = threshold_grid(scores, extra=(0.35, *cut))
    curves = {c.group: c for c in group_curves(scores, grid)}
    checked = 0
    for r in rows:
        if r["metric"] in ("fmr", "fnmr") and r["group"] in curves and r["value"] is not None:
            c = curves[r["group"]]
            i = int(np.searchsorted(grid, r["threshold"]))
            assert getattr(c, r["metric"])[i] == pytest.approx(r["value"], rel=1e-9, abs=1e-12)
            checked += 1
    assert checked >= 15
    assert all(np.all(np.diff(c.fmr[np.isfinite(c.fmr)]) <= 1e-12) for c in curves.values())  # FMR falls with t


def test_verdicts_are_written_from_the_numbers(boards):
    _, cpu, rpi = boards
    v = buyers.verdicts([cpu, rpi])
    # make_run writes no launcher: the page marks the board as imported, everywhere it names it
    board = buyers._board(rpi)
    assert board == "rpi (imported)"
    rpi_lines = " ".join(v[board])
    assert f"gender-dlib onnx-int8 on {board}" in rpi_lines and "measurement INVALID (thermal throttling)" in rpi_lines
    m = re.search(r"gender-dlib onnx-int8 on rpi \(imported\): p90 ([\d.]+) ms vs ([\d.]+) ms at fp32", rpi_lines)
    p90 = rpi.entry("gender-dlib--onnx-int8")["speed"]["single_stream"]["p90_ms"]
    assert m and float(m.group(1)) == pytest.approx(p90, abs=0.006)
    assert "black" in rpi_lines.split(f"gender-dlib onnx-int8 on {board}")[1].split("mobilefacenet")[0]  # planted loss
    assert "exact McNemar on the same samples" in rpi_lines  # a paired test, not overlapping marginal intervals
    assert "FMR at the fp32 threshold from" in rpi_lines


def test_export_parquet_and_csv_round_trip(boards, tmp_path):
    root, cpu, rpi = boards
    for fmt in ("parquet", "csv"):
        out = tmp_path / fmt
        assert main(["export", cpu.run_id, rpi.run_id, "--format", fmt, "-o", str(out),
                     "--results-dir", str(root)]) == 0
        rates = pd.read_parquet(out / "rates.parquet") if fmt == "parquet" else pd.read_csv(out / "rates.csv")
        n = sum(len(e["metrics"]["rates"]) for r in (cpu, rpi) for e in r.entries)
        assert len(rates) == n
        got = rates[(rates.run_id == rpi.run_id) & (rates.entry == "gender-dlib--onnx-int8")
                    & (rates.metric == "accuracy") & (rates.grp == "black") & (rates.group_by == "ethnicity")]
        row = next(r for r in rpi.entry("gender-dlib--onnx-int8")["metrics"]["rates"]
                   if r["metric"] == "accuracy" and r["group"] == "black" and r["group_by"] == "ethnicity")
        assert got["value"].item() == pytest.approx(row["value"])
        speed = pd.read_parquet(out / "speed.parquet") if fmt == "parquet" else pd.read_csv(out / "speed.csv")
        assert len(speed) == 8


def test_uri_choice_and_bad_scheme(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BENCH_STORE", raising=False)
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "r"))
    s = open_store()
    assert isinstance(s, FileStore) and s.root == (tmp_path / "r").resolve()
    assert isinstance(open_store(f"file://{tmp_path}/x"), FileStore)
    monkeypatch.setenv("BENCH_STORE", f"file://{tmp_path}/y")
    assert open_store().root == tmp_path / "y"
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert main(["runs", "--store", "mysql://x/y"]) == EXIT_USAGE
    assert "unknown scheme 'mysql'" in capsys.readouterr().err


def test_file_store_put_and_newest(boards, tmp_path):
    root, cpu, rpi = boards
    dest = FileStore(tmp_path / "copy")
    assert [dest.put(r) for r in (cpu, rpi, cpu)] == ["added", "added", "unchanged"]
    assert dest.newest("rpi").doc == rpi.doc
    assert dest.load(cpu.run_id[:-1]).doc == cpu.doc
    assert sorted(dest.targets()) == ["cpu", "rpi"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (apt-get install -y chromium)")
def test_buyers_page_renders_in_chromium(boards, tmp_path):
    root, cpu, rpi = boards
    page = tmp_path / "buyers.html"
    assert main(["report", "--devices", "-o", str(page), "--results-dir", str(root)]) == 0
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
           "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0
    for anchor in ("verdicts", "boards", "transfer", "pareto", "det", "provenance"):
        assert f"<h2 id=\"{anchor}\">" in dom.stdout, anchor
    assert "<script" not in dom.stdout.lower()
    assert not re.search(r"(src|href)=\"https?:", dom.stdout)  # self-contained: nothing loaded from outside
    assert dom.stdout.count("<svg") >= 2 + 2 * 2  # two Pareto charts, DET + FMR-threshold per board
    assert dom.stdout.count(cpu.run_id) == 1  # the run id once (provenance), not on every row
    assert not re.search(r"Uncaught|:CONSOLE[:(]", dom.stderr)
