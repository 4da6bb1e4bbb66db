"""The watchlist search end to end on the real views set (kept small with --limit): a run of the embedder in fp32
and int8 scores identification per group, records its split, stores embeddings as .npy, and `bench score`
re-scores it from the stored outputs to the same rows."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SWEEP = 1_000  # the gallery size timed besides the watchlist's own (--search-sizes)
FAST = ["--threads", "1", "--min-duration", "0.05", "--min-count", "20", "--bootstrap", "50", "--no-build"]


def bench(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def views_run(built_packs, data_root, tmp_path_factory):
    if not (data_root / "london-frl-views" / "labels.csv").is_file():
        pytest.skip("london-frl-views not in the shared data")
    results = tmp_path_factory.mktemp("watchlist") / "results"
    code, out, err = bench(["--data-root", str(data_root), "--results-dir", str(results), "run", "--target", "cpu",
                            "--model", "mobilefacenet", "--variant", "onnx-fp32", "--variant", "onnx-int8",
                            "--dataset", "london-frl-views", "--limit", "200", "--search-sizes", str(SWEEP), *FAST])
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    return results, run_dir, json.loads((run_dir / "run.json").read_text())


def _ident(doc, variant):
    e = next(e for e in doc["entries"] if e["variant"] == variant)
    assert e["status"] == "ok", e.get("reason")
    return e["metrics"]["identification"]["london-frl-views"]


def test_identification_rows_per_group(views_run):
    _, run_dir, doc = views_run
    rec = next(d for d in doc["data"]["datasets"] if d["id"] == "london-frl-views")
    split = rec["identification"]
    assert split["n_gallery"] == len(split["gallery_images"]) and split["nonmated_subjects"]
    assert {d["id"] for d in doc["data"]["datasets"]} == {"london-frl-views", "fairface-sample"}  # distractors joined
    fp32 = _ident(doc, "onnx-fp32")
    kinds = [t["kind"] for t in fp32["thresholds"]]
    assert kinds[0] == "tuned_fpir" and "verification_1to1" in kinds and kinds.count("fixed") == 3
    assert fp32["n_distractors"] > 0 and fp32["n_gallery"] == len(split["enrolled_subjects"]) + fp32["n_distractors"]
    rates = fp32["own_gallery"]["rates"]
    for t in fp32["thresholds"]:
        for metric in ("fpir", "fnir"):
            rows = [r for r in rates if r["metric"] == metric and r["threshold"] == t["value"]]
            assert rows[0]["group"] == "all" and len(rows) > 2
            for r in rows:
                if r.get("value") is not None:
                    assert r["ci_lo"] <= r["value"] <= r["ci_hi"] and r["n"] >= r["k"] >= 0 and r["n_subjects"] >= 1
    assert any(r["metric"] == "rank1_hit" for r in rates)
    assert fp32["own_gallery"]["fpir_by_gallery_size"][0]["kind"] == "measured"
    assert (run_dir / "embeddings" / "mobilefacenet--onnx-fp32.npy").is_file()


def test_int8_is_read_both_ways_with_flips(views_run):
    _, _, doc = views_run
    fp32, int8 = _ident(doc, "onnx-fp32"), _ident(doc, "onnx-int8")
    assert int8["thresholds"] == fp32["thresholds"]  # the fp32-tuned thresholds, inherited
    assert int8["reference_gallery"]["rates"] and int8["own_gallery"]["rates"]
    configs = {r["config"] for r in int8["flips"]}
    assert configs == {"reference_gallery", "own_gallery"}
    assert all(0 <= r["p_value"] <= 1 for r in int8["flips"])


def test_bench_score_reproduces_the_rows_without_a_device(views_run, tmp_path):
    results, run_dir, doc = views_run
    copy = tmp_path / "results" / run_dir.name
    shutil.copytree(run_dir, copy)
    code, out, err = bench(["--results-dir", str(tmp_path / "results"), "score", run_dir.name])
    assert code == 0, err
    again = json.loads((copy / "run.json").read_text())
    for variant in ("onnx-fp32", "onnx-int8"):
        assert _ident(again, variant) == _ident(doc, variant)
    shutil.rmtree(copy / "samples")
    code, out, err = bench(["--results-dir", str(tmp_path / "results"), "score", run_dir.name])
    assert code == 2 and "no stored raw outputs" in err and len(err.strip().splitlines()) == 1


def test_real_rows_reach_the_export_and_the_report(views_run, tmp_path):
    """The real run's identification rows in `bench export` (every row of run.json, per table) and in the HTML
    report's Identification (1:N) section (every rate cell of the int8 entry, both readings)."""
    import html

    import pandas as pd

    from harness.report.identification import cell
    from harness.results.rows import IDENT_COLUMNS, identification_records

    results, run_dir, doc = views_run
    code, out, err = bench(["--results-dir", str(results), "export", run_dir.name, "--format", "csv",
                            "-o", str(tmp_path / "x")])
    assert code == 0, err
    for table in IDENT_COLUMNS:
        df = pd.read_csv(tmp_path / "x" / f"{table}.csv")
        assert len(df) == sum(len(identification_records(e)[table]) for e in doc["entries"]), table
    code, out, err = bench(["--results-dir", str(results), "report", run_dir.name, "-o", str(tmp_path / "r.html")])
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    section = page[page.index("<h2>Identification (1:N)</h2>"):]
    int8 = _ident(doc, "onnx-int8")
    for config in ("own_gallery", "reference_gallery"):
        for r in int8[config]["rates"]:
            assert html.escape(cell(r)) in section


def test_the_buyers_page_judges_the_real_watchlist_run(views_run, tmp_path):
    """`bench report --devices RUN --policy examples/watchlist.toml` on the real run: the Identification (1:N)
    section judges every probe group of both precisions against the FPIR target with the scorer's counts, the int8
    loss against fp32 is read both ways from the flips, and the search latency timed on this machine is judged at
    the policy's gallery size (or the page says why not)."""
    import html
    import re

    results, run_dir, doc = views_run
    out = tmp_path / "buyers.html"
    code, _, err = bench(["--results-dir", str(results), "report", "--devices", run_dir.name, "--policy",
                          "examples/watchlist.toml", "--trend-since", "none", "-o", str(out)])
    assert code == 0, err
    page = out.read_text()
    section = page[page.index("<h2 id=identification>"):page.index("<h2 id=pareto>")]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", " ", section, flags=re.S))).split())
    for variant in ("onnx-fp32", "onnx-int8"):
        sec = _ident(doc, variant)
        t = next(x for x in sec["thresholds"] if x["kind"] == "tuned_fpir")
        for r in sec["own_gallery"]["rates"]:
            if r["metric"] == "fpir" and r["threshold"] == t["value"] and r.get("value") is not None:
                assert f"{r['k']}/{r['n']} non-mated searches of {r['n_subjects']} people not enrolled" in text
    assert "1:N FNIR loss vs fp32 (fp32 watchlist, onnx-int8 probes)" in text
    assert "1:N FNIR loss vs fp32 (all onnx-int8)" in text
    assert "search speed at 5,000 templates" in text and section.count("<svg") == 1


def test_the_search_runs_on_the_device_per_gallery_size(views_run):
    """The same `bench run`, through the local launcher: each embedder entry's own watchlist gallery went to the
    worker as a search job, stored in the variant's precision; its top-10 equal the host scorer's on the same stored
    templates, and its latency and memory are recorded per gallery size (the watchlist, and --search-sizes padded
    with synthetic templates drawn on the board) beside the entry's inference latency."""
    _, _, doc = views_run
    for variant in ("onnx-fp32", "onnx-int8"):
        e = next(e for e in doc["entries"] if e["variant"] == variant)
        rec = e["speed"]["search"]["london-frl-views"]
        assert rec["status"] == "ok", rec.get("reason")
        n = _ident(doc, variant)["n_gallery"]
        assert n < SWEEP and rec["n_watchlist"] == n and [s["size"] for s in rec["sizes"]] == [n, SWEEP]
        assert rec["topk_check"]["agree"] == rec["topk_check"]["probes"] == rec["n_probes"] > 0
        assert rec["precision"] == variant.split("-")[-1]
        assert rec["top1_vs_fp32"]["probes"] == rec["n_probes"] and rec["top1_vs_fp32"]["rows"][0]["n"] > 0
        if variant == "onnx-fp32":
            assert rec["top1_vs_fp32"]["differs"] == 0
        for s in rec["sizes"]:
            assert s["topk_check"]["agree"] == s["topk_check"]["probes"] > 0
            assert s["memory"]["gallery_bytes"] == s["size"] * (rec["dim"] + 4 if variant == "onnx-int8"
                                                                 else 4 * rec["dim"])
            st = s["single_stream"]
            assert st["count"] >= 20 and 0 < st["p50_ms"] <= st["p90_ms"] and s["validity"]["status"] in (
                "VALID", "INVALID")
        assert e["speed"]["single_stream"]["p50_ms"] > 0  # inference latency, beside it


def test_the_console_summary_shows_search_latency(views_run):
    _, run_dir, _ = views_run
    from harness.commands.run import print_summary

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_summary(run_dir)
    text = out.getvalue()
    assert "watchlist search on the device" in text, text
    assert "mobilefacenet on london-frl-views: watchlist search on the device" in text, text
    rows = [ln for ln in text.splitlines() if "onnx-int8" in ln and "VALID" in ln and "/" in ln]
    assert len(rows) == 2, text  # the watchlist's size and --search-sizes


def test_a_failed_search_on_the_board_keeps_the_run_partial_until_resumed(built_packs, data_root, tmp_path,
                                                                          monkeypatch):
    """A board whose search returns candidates the host's scorer refutes: the search record says so in one line, the
    run stays partial with exit 3 like an entry's infrastructure error, and --resume searches again and completes."""
    import numpy as np

    from harness.launchers import local
    from harness.jobs import SEARCH_TASK

    if not (data_root / "london-frl-views" / "labels.csv").is_file():
        pytest.skip("london-frl-views not in the shared data")

    class WrongCandidates(local.LocalLauncher):
        def launch(self, job, inputs_dir, out_dir):
            result = super().launch(job, inputs_dir, out_dir)
            if job.task == SEARCH_TASK and result.ok:  # swap every probe's two best candidates' ids
                for chunk in sorted((Path(out_dir) / "outputs").glob("chunk-*.npz")):
                    with np.load(chunk) as z:
                        arrays = {k: z[k] for k in z.files}
                    arrays["out0"][:, [0, -1]] = arrays["out0"][:, [-1, 0]]
                    np.savez(chunk, **arrays)
            return result

    monkeypatch.setattr(local, "LocalLauncher", WrongCandidates)
    results = tmp_path / "results"
    common = ["--data-root", str(data_root), "--results-dir", str(results)]
    code, out, err = bench(common + ["run", "--target", "cpu", "--model", "mobilefacenet", "--variant", "onnx-fp32",
                                     "--dataset", "london-frl-views", "--limit", "120", "--search-sizes", str(SWEEP),
                                     *FAST])
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert "1 watchlist search on the board failed" in last and "stays partial" in last and "Traceback" not in err
    run_dir = next(results.glob("*-cpu-*"))
    doc = json.loads((run_dir / "run.json").read_text())
    search = doc["entries"][0]["speed"]["search"]["london-frl-views"]
    assert doc["status"] == "partial" and search["status"] == "failed"
    assert "differ from the host scorer" in search["reason"]
    assert doc["entries"][0]["metrics"]["identification"]  # the scores are kept

    monkeypatch.setattr(local, "LocalLauncher", WrongCandidates.__mro__[1])
    code, out, err = bench(common + ["run", "--resume", run_dir.name])
    assert code == 0, err
    doc = json.loads((run_dir / "run.json").read_text())
    search = doc["entries"][0]["speed"]["search"]["london-frl-views"]
    assert doc["status"] == "complete" and search["status"] == "ok" and search["blas_threads"]["requested"] == 1
    from harness.report.search_speed import search_speed_cells

    e = doc["entries"][0]
    cells = [c for _, c in search_speed_cells(e)]  # the report's rows: search per gallery size beside inference p50
    assert len(cells) == 2 and all(c[-1] == f"{e['speed']['single_stream']['p50_ms']:.3f}" for c in cells)
