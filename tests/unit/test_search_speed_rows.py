"""The on-board search latency in every reader (issue 18): one projection (harness.results.rows.search_speed_records)
feeds `bench export`'s search_speed table, the report's "Identification (1:N)" section and the console. The run is
the fabricated watchlist scored by the real score_run with the real device search on the local worker
(tests/unit/helpers_watchlist.py), its probe groups and a failed search's reason hostile text."""

from __future__ import annotations

import copy
import html

import pandas as pd
import pytest

from harness.cli import main
from harness.jobs import LatencySettings
from harness.launchers.local import LocalLauncher
from harness.report.html import render_html, render_markdown
from harness.report.search_speed import (SEARCH_SPEED_HEADERS, SEARCH_SPEED_NUMERIC, fidelity_line,
                                         search_speed_cells)
from harness.results.rows import COLUMNS, SEARCH_SPEED_COLS, rows_for, search_speed_records, search_speed_rows
from harness.results.store import Run
from harness.search_job import CHECK_PROBES, DeviceSearch
from helpers_watchlist import scored_run

EVIL = "<script>alert(1)</script>"
FAST = LatencySettings(warmup=2, min_duration_s=0.0, min_count=20)
SIZE = 500  # the gallery size timed besides the watchlist's own


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    searcher = DeviceSearch(LocalLauncher(timeout_s=120), tmp_path_factory.mktemp("search"), latency=FAST, seed=0,
                            threads=1, sizes=(SIZE,))
    return root, scored_run(root, groups=(EVIL, "b"), device_search=searcher)


def _failed(r: Run) -> Run:
    """The run with the int8 entry's search failed as DeviceSearch records it (its reason from the board)."""
    doc = copy.deepcopy(r.doc)
    int8 = next(x for x in doc["entries"] if x["variant"] == "onnx-int8")
    searcher = DeviceSearch(LocalLauncher(), r.path, latency=FAST, seed=0)
    int8["speed"]["search"]["syn"] = searcher._failed(int8["entry"], "syn", "infrastructure-error", f"board b: {EVIL}")
    return Run(r.path, doc)


def test_every_gallery_size_is_a_row_with_its_count_interval_and_validity(run):
    _, r = run
    for e in r.entries:
        rec = e["speed"]["search"]["syn"]
        rows = search_speed_records(e)
        n = rec["n_watchlist"]
        assert n < SIZE and [x["gallery_size"] for x in rows] == [n, SIZE]
        assert [x["synthetic"] for x in rows] == [0, SIZE - n]
        for x, size in zip(rows, rec["sizes"]):
            assert x["status"] == "ok" and x["dataset"] == "syn" and x["count"] >= FAST.min_count
            assert x["p50_ci_lo_ms"] <= x["p50_ms"] <= x["p50_ci_hi_ms"] and x["p50_ms"] <= x["p90_ms"] <= x["p99_ms"]
            assert x["validity"] == size["validity"]["status"] in ("VALID", "INVALID")
            assert x["validity_reasons"] == size["validity"]["reasons"]
            # every probe checked on the watchlist, a seeded sample of them on the larger gallery
            want = rec["n_probes"] if x["gallery_size"] == n else min(CHECK_PROBES, rec["n_probes"])
            assert x["topk_agree"] == x["topk_probes"] == want > 0
            assert x["precision"] == e["variant"].split("-")[-1] == rec["precision"]
            itemsize = {"fp32": 4 * rec["dim"], "fp16": 2 * rec["dim"], "int8": rec["dim"] + 4}[x["precision"]]
            assert x["gallery_bytes"] == x["gallery_size"] * itemsize and x["rss_growth_mb"] >= 0
            assert x["blas_threads_requested"] == "1" and x["blas_threads_used"] in ("1", "as requested")
        assert search_speed_rows(r.run_id, e) == [tuple({"run_id": r.run_id, "entry": e["entry"], **x}.get(c)
                                                        for c in SEARCH_SPEED_COLS) for x in rows]
    assert COLUMNS["search_speed"] == SEARCH_SPEED_COLS
    # the stored gallery's top-1 against float32's: identification rate rows of config device_search, per group
    fid = [t for t in rows_for(r.doc)["identification"] if t[COLUMNS["identification"].index("config")]
           == "device_search"]
    cols = COLUMNS["identification"]
    assert {t[cols.index("metric")] for t in fid} == {"top1_differs_from_fp32"}
    assert {t[cols.index("entry")] for t in fid} == {e["entry"] for e in r.entries}
    for t in fid:
        assert t[cols.index("n")] > 0 and t[cols.index("ci_lo")] <= t[cols.index("value")] <= t[cols.index("ci_hi")]
    assert len(rows_for(r.doc)["search_speed"]) == 2 * 2


def test_a_failed_search_is_one_row_with_its_reason_and_no_figures(run):
    _, r = run
    broken = _failed(r)
    rows = search_speed_records(broken.entry("mobilefacenet--onnx-int8"))
    assert rows == [{"dataset": "syn", "status": "failed", "reason": f"infrastructure-error: board b: {EVIL}"}]
    tuples = [t for t in rows_for(broken.doc)["search_speed"] if t[1] == "mobilefacenet--onnx-int8"]
    assert len(tuples) == 1 and tuples[0][SEARCH_SPEED_COLS.index("p50_ms")] is None
    sec = render_html([broken])
    assert EVIL not in sec and html.escape(f"failed: infrastructure-error: board b: {EVIL}") in sec


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bench_export_writes_the_search_speed_table(run, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="parquet needs the store extra (pyarrow)")
    root, r = run
    out = tmp_path / fmt
    assert main(["export", r.run_id, "--format", fmt, "-o", str(out), "--results-dir", str(root)]) == 0
    path = out / f"search_speed.{fmt}"
    df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    assert list(df.columns) == list(SEARCH_SPEED_COLS) and len(df) == 4
    want = pd.DataFrame.from_records(rows_for(r.doc)["search_speed"], columns=list(SEARCH_SPEED_COLS))
    for col in ("gallery_size", "synthetic", "count", "p50_ms", "p50_ci_lo_ms", "p99_ms"):
        assert df[col].tolist() == pytest.approx(want[col].tolist()), col
    assert list(df["validity"]) == list(want["validity"]) and set(df["entry"]) == {e["entry"] for e in r.entries}


def test_the_report_shows_search_latency_per_gallery_size_beside_inference(run):
    _, r = run
    page = render_html([r])
    start = page.index("<h2>Identification (1:N)</h2>")
    sec = page[start:page.index("<h2>", start + 10)]
    md = render_markdown([r])
    for e in r.entries:
        assert f"{html.escape(e['entry'])}: search latency on the board" in sec
        fid = fidelity_line(e, "syn")  # the stored gallery's top-1 against float32's, below the latency table
        assert fid.startswith(f"Stored in {e['variant'].split('-')[-1]}, the watchlist's top-1 is not a float32")
        assert f"<p>{html.escape(fid)}</p>" in sec and html.escape(fid, quote=False) in md
        for ds, cells in search_speed_cells(e):
            assert ds == "syn" and len(cells) == len(SEARCH_SPEED_HEADERS)
            row = "".join(f"<td{' class=num' if n else ''}>{html.escape(c)}</td>"
                          for c, n in zip(cells, SEARCH_SPEED_NUMERIC))
            assert row in sec
            assert "| " + " | ".join(cells) + " |" in md
            assert cells[-1] == "-"  # the fabricated entries ran no inference; a real run's p50 (tested in e2e)
    assert "search latency on the board, syn" in md
