"""The camera section's 1:N watchlist block (harness/report/camera.py: _identification_block) on a fabricated sweep
whose answers are known (tests/unit/helpers_watchlist.py: synthetic embeddings, real scoring).

Unmodified (exposure 0) and -2 EV: the same embeddings. At -4 EV every mated probe of group "a" fails to acquire
(a miss at any threshold) and every non-mated probe of group "b" is the custody photo of an enrolled person (scores
1.0 against that template: a false positive at the fixed fp32 threshold, which re-tuning per level would hide)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_watchlist import scored_run

from harness.camera.conditions import parse
from harness.data.watchlist import WatchlistSplit
from harness.metrics.precision_loss import mcnemar_exact
from harness.report import camera
from harness.report.html import render_markdown


def _split(run) -> WatchlistSplit:
    rec = next(d for d in run.doc["data"]["datasets"] if d["id"] == "syn")
    return WatchlistSplit.from_dict("syn", rec["identification"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("ident-sweep")
    cond = lambda level: parse(f"exposure:{level}")[0].to_dict()  # noqa: E731
    ref = scored_run(root, condition=cond(0))
    split = _split(ref)

    def darker(frame, emb):
        syn = (frame["dataset"] == "syn").to_numpy()
        roles = split.roles(frame["image"], frame["subject"].astype(str)).to_numpy()
        lost = syn & (roles == "mated") & (frame["grp"] == "a").to_numpy()
        frame.loc[lost, ["status", "fta_reason"]] = ["fta", "no_face"]
        emb[lost] = np.nan
        custody = np.nonzero(syn & (roles == "gallery"))[0][0]
        emb[syn & (roles == "nonmated") & (frame["grp"] == "b").to_numpy()] = emb[custody]
        return frame, emb

    mid = scored_run(root, condition=cond(-2))
    dark = scored_run(root, condition=cond(-4), plant=darker)
    return ref, mid, dark, camera.camera_report([dark, ref, mid])


def _block(report):
    (_, blocks, _), = report.sweeps
    return next(b for b in blocks if b.task == "identification")


def _curve(block, variant, metric, group, level):
    return next(r for r in block.curves if (r["variant"], r["metric"], r["group"], r["level"])
                == (variant, metric, group, level))


def _stored(run, variant, metric, group):
    e = next(x for x in run.entries if x["variant"] == variant)
    rows = e["metrics"]["identification"]["syn"]["own_gallery"]["rates"]
    return next(r for r in rows if (r["metric"], r["group"], r.get("threshold_kind")) == (metric, group, "tuned_fpir"))


def test_unmodified_level_is_the_runs_own_watchlist_rows(sweep):
    ref, _, _, report = sweep
    block = _block(report)
    assert block.dataset == "syn" and block.variants == ["onnx-fp32", "onnx-int8"]
    for variant in block.variants:
        for metric in ("fpir", "fnir"):
            for group in ("all", "a", "b"):
                got, want = _curve(block, variant, metric, group, 0.0), _stored(ref, variant, metric, group)
                for k in ("value", "ci_lo", "ci_hi", "k", "n", "n_subjects", "threshold"):
                    assert got[k] == want[k], (variant, metric, group, k)


def test_threshold_stays_the_unmodified_fp32_one(sweep):
    ref, _, dark, report = sweep
    block = _block(report)
    fp32 = next(x for x in ref.entries if x["variant"] == "onnx-fp32")
    tuned = next(t["value"] for t in fp32["metrics"]["identification"]["syn"]["thresholds"]
                 if t["kind"] == "tuned_fpir")
    assert {r["threshold"] for r in block.curves} == {tuned}
    assert any(f"{tuned:.4f}" in n for n in block.notes)
    # the planted false positives count at the fixed threshold: every non-mated search of group b
    fpir_b = _curve(block, "onnx-fp32", "fpir", "b", -4.0)
    assert fpir_b["n"] > 0 and fpir_b["k"] == fpir_b["n"] and fpir_b["value"] == 1.0
    # the level's own run re-tuned its threshold above those scores, so its stored FPIR for b stays 0: the camera
    # block does not take it
    assert _stored(dark, "onnx-fp32", "fpir", "b")["k"] == 0


def test_first_level_that_differs_known_answer(sweep):
    ref, _, _, report = sweep
    block = _block(report)
    for variant in block.variants:
        row = next(r for r in block.first if (r["variant"], r["metric"], r["group"]) == (variant, "fnir", "a"))
        before = _curve(block, variant, "fnir", "a", 0.0)
        hits = before["n"] - before["k"]  # mated searches of group a right unmodified, all missed at -4 EV
        assert row["tests"][-2.0]["b"] == 0 and row["tests"][-2.0]["c"] == 0 and row["tests"][-2.0]["p_value"] == 1
        t = row["tests"][-4.0]
        assert (t["n"], t["b"], t["c"]) == (before["n"], hits, 0)
        assert t["p_value"] == pytest.approx(mcnemar_exact(hits, 0))
        assert hits >= 6 and row["first_level"] == -4.0  # 6 discordant searches: exact p = 2 / 2^6 < 0.05
        assert _curve(block, variant, "fnir", "a", -4.0)["value"] == 1.0
        # untouched searches: no flip at any level
        for metric, group in (("fnir", "b"), ("fpir", "a")):
            row = next(r for r in block.first if (r["variant"], r["metric"], r["group"]) == (variant, metric, group))
            assert all(t["b"] == t["c"] == 0 for t in row["tests"].values()) and row["first_level"] is None
    fp = next(r for r in block.first if (r["variant"], r["metric"], r["group"]) == ("onnx-fp32", "fpir", "b"))
    t = fp["tests"][-4.0]
    assert t["b"] == t["n"] and t["c"] == 0 and t["p_value"] == pytest.approx(mcnemar_exact(t["n"], 0))


def test_markdown_has_the_watchlist_block(sweep, tmp_path):
    ref, mid, dark, _ = sweep
    text = "\n".join(camera.markdown_section([ref, mid, dark]))
    assert "#### mobilefacenet on syn, by grp, 1:N watchlist search (probe group)" in text
    assert "| onnx-int8 | fnir | a |" in text and "kept fixed at every level" in text
    assert "1:N watchlist search (probe group)" in render_markdown([ref, mid, dark])
