"""Identification metrics on synthetic embeddings: FPIR/FNIR/rank hits per group, subject weighting, thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import watchlist as wl
from harness.data.watchlist import WatchlistRules, watchlist_split
from harness.metrics import identification as ident


def test_threshold_at_fpir_is_the_lowest_meeting_the_target():
    top1 = np.array([0.9, 0.8, 0.7, 0.6, -np.inf, 0.5, 0.4, 0.3, 0.2, 0.1])
    t = ident.threshold_at_fpir(top1, 10, 0.2)  # at most 2 of 10 searches may return a candidate
    assert (top1 >= t).sum() == 2 and (top1 >= np.nextafter(t, -np.inf)).sum() == 3
    assert ident.threshold_at_fpir(top1, 0, 0.2) is None


def test_subject_rate_counts_each_person_once():
    # person a: 8 searches, all errors; b and c: 1 search each, no error -> per-person mean 1/3, not 8/10
    errors = np.array([1] * 8 + [0, 0])
    subjects = ["a"] * 8 + ["b", "c"]
    rows = ident.subject_rate_rows(errors, subjects, ["g"] * 10, metric="fpir", group_by="x", n_boot=200, seed=0)
    all_row = rows[0]
    assert all_row["group"] == "all" and all_row["n"] == 10 and all_row["k"] == 8 and all_row["n_subjects"] == 3
    assert all_row["value"] == pytest.approx(1 / 3) and all_row["search_value"] == pytest.approx(0.8)
    assert all_row["ci_method"] == "subject_bootstrap" and all_row["ci_lo"] <= 1 / 3 <= all_row["ci_hi"]


def test_zero_errors_get_the_clopper_pearson_bound_over_people():
    rows = ident.subject_rate_rows(np.zeros(12), [f"s{i // 3}" for i in range(12)], ["g"] * 12, metric="fnir",
                                   group_by="x", n_boot=50, seed=0)
    assert rows[0]["value"] == 0 and rows[0]["ci_method"] == "clopper_pearson_upper"
    assert rows[0]["ci_hi"] == pytest.approx(1 - 0.05 ** (1 / 4))  # 4 people, not 12 searches


def test_search_outcomes_at_or_above_and_rank():
    top1 = np.array([0.5, 0.49, -np.inf])
    mate = np.array([0.7, 0.7, -np.inf])
    rank = np.array([1, 2, 21])
    fp, miss = ident.search_outcomes(top1, mate, rank, 0.5, 1)
    assert fp.tolist() == [True, False, False]       # a search with no template returns no candidate
    assert miss.tolist() == [False, True, True]      # rank 2 misses at R = 1; no template is a miss


def test_model_rows_are_labelled_and_follow_the_histogram():
    hist = np.zeros((1, 20), np.int64)
    hist[0, 19] = 1   # one comparison in [0.9, 1.0]
    hist[0, 10] = 99  # the rest in [0.0, 0.1)
    rows = ident.fpir_model_rows(hist, ["g"], 0.9, [1, 1000], {"threshold": 0.9})
    g = [r for r in rows if r["group"] == "g"]
    assert all(r["kind"] == "model" for r in rows)
    assert g[0]["p_t"] == pytest.approx(0.01) and g[0]["value"] == pytest.approx(0.01)
    assert g[1]["value"] == pytest.approx(1 - 0.99 ** 1000)


def _synthetic(n_people=12, photos=4, dim=16, seed=0):
    """People with a clear identity direction: photo 0 is the front/gallery one."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, dim))
    rows, emb = [], []
    for p in range(n_people):
        for j in range(photos):
            v = centres[p] + 0.3 * rng.standard_normal(dim)
            emb.append(v / np.linalg.norm(v))
            rows.append({"sample_id": f"{p}-{j}", "image": f"{p}_{j}.jpg", "subject": f"p{p:02d}",
                         "view": "front" if j == 0 else "side", "grp": "a" if p % 2 else "b", "status": "ok"})
    return pd.DataFrame(rows), np.array(emb)


def test_watchlist_rows_end_to_end_on_synthetic_people():
    frame, emb = _synthetic()
    rules = WatchlistRules({"view": ("front",)}, 0.25, None)
    split = watchlist_split("syn", frame.assign(dataset="syn"), rules, seed=1, group_by=["grp"], origin="syn")
    assert len(split.nonmated) == 4 and len(split.enrolled) == 8
    frame.loc[frame["sample_id"] == "1-2", "status"] = "fta"  # one probe fails to acquire
    s = wl.run_searches(frame, emb, emb, split, None, None, ["grp"], [], seed=0)
    assert s.n_gallery == 8 and len(s.probes) == 8 * 3 + 4 * 4
    out = wl.rows_at(s, [{"value": 0.99, "kind": "fixed"}, {"value": -1.0, "kind": "fixed"}], ["grp"], n_boot=50,
                     seed=0)
    rates = {(r["metric"], r["group"], r["threshold"]): r for r in out["rates"]}
    # at 0.99 nobody's best impostor reaches the threshold; at -1 every non-mated search returns a candidate
    # (a non-mated probe that failed to acquire returns no candidate; a mated one is a miss)
    fta_nonmated = "p01" in split.nonmated
    assert rates[("fpir", "all", 0.99)]["k"] == 0
    assert rates[("fpir", "all", -1.0)]["k"] == 16 - fta_nonmated and rates[("fpir", "all", -1.0)]["n"] == 16
    assert rates[("fnir", "all", -1.0)]["k"] >= (not fta_nonmated)
    hits = {r["group"]: r for r in out["rates"] if r["metric"] == "rank1_hit"}
    assert set(hits) == {"all", "a", "b"} and 0 <= hits["all"]["value"] <= 1
    measured = [r for r in out["fpir_by_gallery_size"] if r["group"] == "all" and r["threshold"] == -1.0]
    assert [r["gallery_size"] for r in measured] == [8] and measured[0]["kind"] == "measured"
    assert all(r["kind"] == "model" for r in out["fpir_by_gallery_size_model"])
    assert all(r["n_false"] >= 1 for r in out["false_candidates"])


def test_flips_between_two_galleries():
    frame, emb = _synthetic(seed=2)
    split = watchlist_split("syn", frame, WatchlistRules({"view": ("front",)}, 0.25, None), seed=1,
                            group_by=["grp"], origin="syn")
    thr = [{"value": 0.5, "kind": "fixed"}]
    ref = wl.run_searches(frame, emb, emb, split, None, None, ["grp"], [], seed=0)
    noisy = emb + 0.5 * np.random.default_rng(3).standard_normal(emb.shape)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    var = wl.run_searches(frame, noisy, emb, split, None, None, ["grp"], [], seed=0)
    rows = wl.flips(wl.decisions(ref, thr, ["grp"]), wl.decisions(var, thr, ["grp"]), ["grp"], "reference_gallery")
    assert {r["metric"] for r in rows} == {"fpir", "fnir"}
    assert all(0 <= r["p_value"] <= 1 and r["flips"] == r["b"] + r["c"] for r in rows)
    same = wl.flips(wl.decisions(ref, thr, ["grp"]), wl.decisions(ref, thr, ["grp"]), ["grp"], "x")
    assert all(r["flips"] == 0 for r in same)
