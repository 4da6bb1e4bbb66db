"""Identification (1:N) rows in the HTML report, the report's CSV and `bench export`, from a fabricated watchlist
run scored by the real score_run (tests/unit/helpers_watchlist.py) whose probe groups are hostile names."""

from __future__ import annotations

import html
import io
import re

import pandas as pd
import pytest

from harness.cli import main
from harness.report.html import SECTIONS, render_csv, render_html, render_markdown
from harness.report.identification import EMPTY, cell
from harness.results.rows import IDENT_COLUMNS, identification_records
from helpers_watchlist import scored_run

EVIL = "<script>alert(1)</script>"
GROUPS = (EVIL, "b&amp;\"q\"")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, scored_run(root, groups=GROUPS)


def _section(page: str) -> str:
    start = page.index("<h2>Identification (1:N)</h2>")
    return page[start:page.index("<h2>", start + 10)]


def test_html_section_has_every_rate_with_counts_and_interval_escaped(run):
    _, r = run
    page = render_html([r])
    assert "Identification (1:N)" in SECTIONS
    sec = _section(page)
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in sec
    assert html.escape(GROUPS[1]) in sec and GROUPS[1] not in sec
    int8 = r.entry("mobilefacenet--onnx-int8")["metrics"]["identification"]["syn"]
    assert [t["kind"] for t in int8["thresholds"]] == ["tuned_fpir", "verification_1to1", "fixed", "fixed"]
    for config in ("own_gallery", "reference_gallery"):
        for row in int8[config]["rates"]:  # every rate row of both readings is in the page, with k/n and interval
            text = cell(row)
            if row.get("value") is not None:
                assert re.search(r"\[[^\]]+\] \d+/\d+$", text)
            assert html.escape(text) in sec, (config, row["metric"], row["group"], text)
    assert "fp32 watchlist searched by onnx-int8 probes" in sec and "its own watchlist (all onnx-int8)" in sec
    flips = [f for f in int8["flips"] if f["group"] == "all"]
    assert {f["config"] for f in flips} == {"own_gallery", "reference_gallery"}
    for f in flips:  # flip counts and McNemar p, both ways
        assert f"<td class=num>{f['b']}</td><td class=num>{f['c']}</td><td class=num>{f['p_value']:.2g}</td>" in sec
    assert "FPIR against gallery size" in sec and "model" in sec
    size = int8["own_gallery"]["fpir_by_gallery_size"][0]
    assert f"<td class=num>{size['gallery_size']:,}</td><td>measured</td>" in sec
    assert sec.count("<svg") == 2 + 2  # FNIR and FPIR bars; FPIR against gallery size per entry


def test_markdown_report_has_the_tables_escaped(run):
    _, r = run
    md = render_markdown([r])
    assert EVIL not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "identification (1:N) on syn, fp32 watchlist searched by onnx-int8 probes" in md
    tuned = next(x for x in r.entry("mobilefacenet--onnx-fp32")["metrics"]["identification"]["syn"]["own_gallery"]
                 ["rates"] if x["metric"] == "fpir" and x["group"] == "all" and x["threshold_kind"] == "tuned_fpir")
    assert cell(tuned) in md and "decisions against fp32 on syn" in md


def test_html_without_identification_says_so(tmp_path):
    from helpers_results import make_run

    page = render_html([make_run(tmp_path, models=("gender-dlib",), variants=("onnx-fp32",), n_timings=20)])
    assert EMPTY in _section(page)


def test_report_csv_holds_the_identification_rate_rows(run):
    _, r = run
    df = pd.read_csv(io.StringIO(render_csv([r])), keep_default_na=False)
    n_rates = sum(len(e["metrics"].get("rates") or []) for e in r.entries)
    ident = [x for e in r.entries for x in identification_records(e)["identification"]]
    assert len(ident) > 0 and len(df) == n_rates + len(ident)
    got = df[(df.entry == "mobilefacenet--onnx-int8") & (df.config == "reference_gallery") & (df.metric == "fnir")
             & (df.threshold_kind == "tuned_fpir") & (df.group == EVIL)]
    want = next(x for x in r.entry("mobilefacenet--onnx-int8")["metrics"]["identification"]["syn"]
                ["reference_gallery"]["rates"]
                if x["metric"] == "fnir" and x["threshold_kind"] == "tuned_fpir" and x["group"] == EVIL)
    assert len(got) == 1 and got["value"].astype(float).item() == pytest.approx(want["value"])
    assert (int(got["k"].item()), int(got["n"].item())) == (want["k"], want["n"])
    assert float(got["ci_lo"].item()) == pytest.approx(want["ci_lo"]) and got["dataset"].item() == "syn"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bench_export_writes_the_identification_tables(run, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="parquet needs the store extra (pyarrow)")
    root, r = run
    out = tmp_path / fmt
    assert main(["export", r.run_id, "--format", fmt, "-o", str(out), "--results-dir", str(root)]) == 0
    want = {t: sum(len(identification_records(e)[t]) for e in r.entries) for t in IDENT_COLUMNS}
    for table, cols in IDENT_COLUMNS.items():
        path = out / f"{table}.{fmt}"
        df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, keep_default_na=False)
        assert list(df.columns) == list(cols) and len(df) == want[table] > 0, table
    flips = pd.read_parquet(out / "identification_flips.parquet") if fmt == "parquet" else \
        pd.read_csv(out / "identification_flips.csv", keep_default_na=False)
    assert set(flips["grp"]) == {"all", *GROUPS}  # names read from files stay data
    assert set(flips["reference_entry"]) == {"mobilefacenet--onnx-fp32"}


def test_a_section_that_could_not_be_computed_has_no_rows_and_says_why(run):
    import copy

    from harness.results.rows import rows_for
    from harness.results.store import Run

    _, r = run
    doc = copy.deepcopy(r.doc)
    int8 = next(x for x in doc["entries"] if x["variant"] == "onnx-int8")
    int8["metrics"]["identification"]["syn"] = {"status": "not_computable",
                                                 "reason": f"no reference entry {EVIL}"}
    broken = Run(r.path, doc)
    assert all(x[1] != int8["entry"] for t in IDENT_COLUMNS for x in rows_for(doc)[t])
    assert any(x[1] == "mobilefacenet--onnx-fp32" for x in rows_for(doc)["identification"])
    sec = _section(render_html([broken]))
    assert ('<div class="warn">mobilefacenet--onnx-int8: not_computable: no reference entry '
            '&lt;script&gt;alert(1)&lt;/script&gt;</div>') in sec
    assert "fp32 watchlist searched by" not in sec and "its own watchlist (all onnx-fp32)" in sec
