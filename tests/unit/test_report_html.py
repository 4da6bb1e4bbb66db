"""HTML/Markdown/CSV reports: self-contained, every data string escaped, the exports round-trip."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.commands import report as report_cmd
from harness.errors import UsageError
from harness.report.html import SECTIONS, render_csv, render_html, render_markdown, report_format
from helpers_results import make_run

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    a = make_run(root, models=("gender-dlib", "mobilefacenet"), rename_groups={"west_asian": EVIL},
                 drop={"onnx-int8": {"black": 0.15}}, fmr_boost={"onnx-int8": 0.01},
                 invalid={"onnx-int8": ["throttled: 0x50005 <under-voltage>"]})
    b = make_run(root, target="rpi", models=("gender-dlib", "mobilefacenet"), seed=1,
                 energy_mj={"onnx-fp32": 5.0, "onnx-int8": 2.0})
    return root, a, b


def test_html_is_self_contained_and_escaped(runs):
    _, a, b = runs
    page = render_html([a, b])
    assert EVIL not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # escaped in tables and in the SVG text
    assert "&lt;under-voltage&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external resource referenced"
    assert "<link" not in page and "@import" not in page
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert page.count("<svg") >= 6  # group bars, heatmap, threshold transfer, latency, pareto
    for empty in ("No rate rows", "No precision-loss deltas", "No threshold-transfer rows", "No raw timings"):
        assert empty not in page, empty
    assert 'class="stamp INVALID"' in page and 'class="stamp VALID"' in page
    assert a.doc["entries"][0]["model_sha256"] in page  # provenance


def test_markdown_and_csv_exports(runs):
    _, a, b = runs
    md = render_markdown([a, b])
    assert EVIL not in md and "&lt;script&gt;" in md
    assert "## gender-dlib--onnx-int8 @ cpu" in md
    df = pd.read_csv(io.StringIO(render_csv([a, b])))
    n_rows = sum(len(e["metrics"]["rates"]) for r in (a, b) for e in r.entries)
    assert len(df) == n_rows
    assert set(df["run_id"]) == {a.run_id, b.run_id}
    assert EVIL in set(df["group"].str.split("*").explode())  # CSV keeps the raw value: it is data, not markup


def test_format_selection():
    assert report_format(Path("r.md"), None) == "md"
    assert report_format(Path("r.CSV"), None) == "csv"
    assert report_format(Path("r.html"), None) == "html"
    assert report_format(None, None) == "html"
    assert report_format(Path("r.html"), "csv") == "csv"
    with pytest.raises(UsageError, match="unknown report format 'pdf'"):
        report_format(None, "pdf")


def test_report_command_writes_file(runs, tmp_path):
    root, a, _ = runs
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir")
    report_cmd.register(parser.add_subparsers())
    out = tmp_path / "sub" / "r.md"
    args = parser.parse_args(["--results-dir", str(root), "report", a.run_id, "-o", str(out)])
    assert args.func(args) == 0
    assert out.read_text().startswith("# Comparison of 1 runs")


def test_reports_give_the_paired_ratio_to_fp32_at_the_fp32_threshold(tmp_path):
    """A planted rise of one group's impostor scores: run.json holds, per group, the variant's FMR at the fp32
    threshold as a ratio and a difference to fp32 with paired intervals, and both reports print that row."""
    run = make_run(tmp_path, models=("mobilefacenet",), fmr_boost={"onnx-int8": 0.3})
    rows = run.entry("mobilefacenet--onnx-int8")["metrics"]["reference"]["paired_rates"]
    black = next(r for r in rows if r["metric"] == "fmr" and r["group"] == "black")
    fp32 = next(r for r in run.entry("mobilefacenet--onnx-fp32")["metrics"]["rates"]
                if r["metric"] == "fmr" and r["group"] == "black" and r["threshold_kind"] == "tuned")
    assert black["ref_value"] == fp32["value"] and black["ref_k"] == fp32["k"] and black["n"] == fp32["n"]
    assert black["var_k"] > black["ref_k"] and black["ci_lo"] > 0 and black["test"] == "paired subject bootstrap"
    white = next(r for r in rows if r["metric"] == "fmr" and r["group"] == "white")
    assert white["ratio"] == pytest.approx(white["var_value"] / white["ref_value"])
    md = render_markdown([run])
    assert "against fp32 at the fp32 threshold" in md
    line = next(x for x in md.splitlines() if x.startswith("| fmr | black |"))
    assert f"{black['ref_k']} → {black['var_k']}" in line and "no ratio: fp32 rate is 0" in line
    assert "against fp32 at the fp32 threshold" in render_html([run])


def test_flagged_variant_is_named_in_html_and_markdown(tmp_path):
    fid = {"against": "onnx-fp32", "within_tolerance": False, "reason": "12 of 100 faces disagree (12.0%, 95% upper "
           "bound 18.1% > 5%)", "host": {"arch": "x86_64", "vnni": False, "features": {"avx2": True}}}
    run = make_run(tmp_path, fidelity={"onnx-int8": fid})
    want = "gender-dlib--onnx-int8 flagged: 12 of 100 faces disagree (12.0%, 95% upper bound 18.1% &gt; 5%) " \
           "(measured on x86_64, avx2, no VNNI)"
    assert want in render_html([run])
    assert want.replace("&gt;", ">") in render_markdown([run])
