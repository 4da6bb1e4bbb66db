"""Variant against reference: paired deltas, retention, decision flips, embedding drift, threshold transfer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import InputError
from harness.metrics import (
    decision_flips, embedding_drift, mcnemar_exact, pair_scores, paired_deltas, retention, threshold_transfer,
)
from harness.metrics.inputs import DUPLICATE_SAMPLE_ID, MISSING_COLUMNS, NO_SAMPLE_ID
from harness.metrics.rates import paired_difference_interval


def data_root() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


def hand_pair():
    # f: s1..s4 ref 1,1,0,1 / var 1,0,0,1 -> one loss: 3/4 -> 2/4, delta -0.25
    # m: s5,s6 ref 0,1 / var 1,1 -> one gain: 1/2 -> 2/2, delta +0.5
    # s7 (m): variant FTA (null) -> excluded; s8 only in the reference -> unpaired
    ref = pd.DataFrame({"sample_id": [f"s{i}" for i in range(1, 9)], "gender": list("ffffmmmm"),
                        "correct": [1, 1, 0, 1, 0, 1, 1, 1]})
    var = pd.DataFrame({"sample_id": [f"s{i}" for i in range(1, 8)],
                        "correct": [1, 0, 0, 1, 1, 1, None]})
    return ref, var


def test_paired_deltas_hand_case():
    ref, var = hand_pair()
    rows = {r["group"]: r for r in paired_deltas(ref, var, success_col="correct", group_by=["gender"], seed=0)}
    assert (rows["f"]["ref_value"], rows["f"]["var_value"], rows["f"]["delta"]) == (0.75, 0.5, -0.25)
    assert (rows["m"]["n"], rows["m"]["delta"], rows["m"]["excluded"]) == (2, 0.5, 1)
    # all: 6 paired usable samples, ref 4/6, var 4/6 -> delta 0
    assert (rows["all"]["n"], rows["all"]["delta"], rows["all"]["unpaired"]) == (6, 0.0, 1)
    assert rows["f"]["unit"] == "sample" and rows["f"]["n_units"] == 4
    # Resampling f's four per-sample differences (0, -1, 0, 0): every delta* lies in [-1, 0], which four faces
    # cannot show (the variant may be the better one); the interval is widened to Newcombe's score interval.
    assert -1.0 <= rows["f"]["ci_lo"] <= -0.25 <= 0.0 < rows["f"]["ci_hi"]
    assert rows["f"]["ci_method"] == "paired_bootstrap_floored"
    assert rows["f"]["ci_hi"] == pytest.approx(paired_difference_interval(2, 1, 0, 1)[1])


def test_paired_deltas_never_collapse_when_every_unit_changes_alike_and_are_seeded():
    ref = pd.DataFrame({"sample_id": list("abcd"), "g": ["x"] * 4, "correct": [True] * 4})
    var = pd.DataFrame({"sample_id": list("abcd"), "correct": [False] * 4})
    row = paired_deltas(ref, var, success_col="correct", group_by=["g"], seed=1)[1]
    # Every resample gives -1; four faces cannot show the loss is total: Newcombe's score interval is the floor.
    assert row["delta"] == -1.0 and row["ci_method"] == "paired_bootstrap_floored"
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx(paired_difference_interval(0, 4, 0, 0))
    assert row["ci_lo"] == -1.0 and -0.5 < row["ci_hi"] < -0.2
    ref2, var2 = hand_pair()
    a = paired_deltas(ref2, var2, success_col="correct", group_by=["gender"], seed=4, n_boot=200)
    assert a == paired_deltas(ref2, var2, success_col="correct", group_by=["gender"], seed=4, n_boot=200)


def test_paired_deltas_resample_subjects_on_london_labels():
    labels = pd.read_csv(data_root() / "london-frl" / "labels.csv", dtype={"subject": str})
    ref = labels.assign(sample_id="london-frl/" + labels["image"], correct=True)
    rng = np.random.default_rng(0)
    var = ref[["sample_id"]].assign(correct=rng.random(len(ref)) > 0.1)  # ~10% lost in the variant
    rows = {r["group"]: r for r in paired_deltas(ref, var, success_col="correct", group_by=["gender"], seed=0)}
    assert rows["all"]["unit"] == "subject" and rows["all"]["n_units"] == 102 and rows["all"]["n"] == 204
    lost = (~var["correct"]).sum()
    assert rows["all"]["delta"] == pytest.approx(-lost / 204)
    assert rows["all"]["ci_lo"] < rows["all"]["delta"] < rows["all"]["ci_hi"] <= 0.0


def test_paired_inputs_errors():
    ref, var = hand_pair()
    with pytest.raises(InputError) as err:
        paired_deltas(ref, var.drop(columns="sample_id"), success_col="correct", group_by=["gender"], seed=0)
    assert str(err.value) == NO_SAMPLE_ID.format(what="paired_deltas(correct) (variant)")
    with pytest.raises(InputError) as err:
        decision_flips(ref, pd.concat([var, var.iloc[:1]]), "correct", ["gender"])
    assert str(err.value) == DUPLICATE_SAMPLE_ID.format(what="decision_flips(correct) (variant)", sample_id="s1")
    with pytest.raises(InputError) as err:
        decision_flips(ref, var.rename(columns={"correct": "ok"}), "correct", ["gender"])
    assert str(err.value) == MISSING_COLUMNS.format(
        what="decision_flips(correct) (variant)", missing="correct", present="sample_id, ok")


def test_retention_per_group_and_worst():
    def row(metric, group, value):
        return {"metric": metric, "group_by": "g", "group": group, "n": 100, "k": 0, "value": value}
    ref = [row("accuracy", "all", 0.85), row("accuracy", "a", 0.9), row("accuracy", "b", 0.8),
           row("fmr", "a", 0.001), row("fmr", "b", 0.001), row("fmr", "c", 0.0)]
    var = [row("accuracy", "all", 0.805), row("accuracy", "a", 0.81), row("accuracy", "b", 0.8),
           row("fmr", "a", 0.002), row("fmr", "b", 0.001), row("fmr", "c", 0.001)]
    out = {(r["metric"], r["group"]): r for r in retention(ref, var)}
    # a: 0.81/0.9 = 0.9; b: 0.8/0.8 = 1 -> worst a (all's 0.947 is not a group)
    assert out[("accuracy", "a")]["retention"] == pytest.approx(0.9)
    worst = out[("accuracy", "worst")]
    assert (worst["worst_group"], worst["retention"]) == ("a", pytest.approx(0.9))
    # fmr is lower-is-better: a doubles (2.0) -> worst; c's reference is 0 -> retention undefined (null)
    assert out[("fmr", "c")]["retention"] is None
    assert (out[("fmr", "worst")]["worst_group"], out[("fmr", "worst")]["retention"]) == ("a", pytest.approx(2.0))


def test_mcnemar_exact_textbook_value():
    # b=10, c=2: p = 2 * P(X <= 2 | n=12, 1/2) = 2 * (1 + 12 + 66) / 4096 = 158/4096 = 0.0385742
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    assert mcnemar_exact(0, 0) == 1.0


def test_decision_flips_counts_and_p():
    # group x: 10 samples right->wrong (b), 2 wrong->right (c), 5 unchanged right, 3 unchanged wrong
    ref_c = [1] * 10 + [0] * 2 + [1] * 5 + [0] * 3
    var_c = [0] * 10 + [1] * 2 + [1] * 5 + [0] * 3
    ids = [f"i{k}" for k in range(20)]
    ref = pd.DataFrame({"sample_id": ids, "grp": "x", "correct": ref_c})
    var = pd.DataFrame({"sample_id": ids, "correct": var_c})
    row = decision_flips(ref, var, "correct", ["grp"])[1]
    assert (row["n"], row["flips"], row["b"], row["c"]) == (20, 12, 10, 2)
    assert row["flip_rate"] == pytest.approx(0.6) and row["p_value"] == pytest.approx(158 / 4096)


def test_embedding_drift_hand_case():
    ref = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    var = np.array([[1, 0], [0.6, 0.8], [np.nan, np.nan]], dtype=np.float32)
    rows = {r["group"]: r for r in embedding_drift(ref, var, ["a", "a", "b"])}
    # a: cosines 1.0 and 0.8 -> mean 0.9, p5 = 0.8 + 0.05*(1.0-0.8) = 0.81, min 0.8; b: no finite row
    assert rows["a"]["n"] == 2 and set(rows) == {"all", "a"}
    assert (rows["a"]["mean"], rows["a"]["p5"], rows["a"]["min"]) == pytest.approx((0.9, 0.81, 0.8))


def test_threshold_transfer_hand_case():
    # Same six points as test_metrics_verification: impostors above .45 are 4 of 13; re-tuned to FMR 0.1 the
    # variant threshold is cos30 = .866, with 1 of 13 above.
    angles = np.deg2rad([0, 25, 90, 60, 180, 200])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    scores = pair_scores(emb, list("AABCCD"), ["g1"] * 3 + ["g2"] * 3)
    rows = {(r["metric"], r["group"]): r for r in threshold_transfer(0.45, scores, target_fmr=0.1)}
    r = rows[("fmr", "all")]
    assert r["var_threshold"] == pytest.approx(np.cos(np.deg2rad(30)), abs=1e-6)
    # Subject-pair weighted (6 subject pairs; A, C have 2 images, B, D 1): above .45 are C-D 1 of 2, B-C 1 of 2,
    # A-C 2 of 4 -> 1.5 / 6 = 0.25; above .866 only C-D 1 of 2 -> 0.5 / 6. (Pooled pairs: 4/13 and 1/13.)
    assert (r["value_at_ref_threshold"], r["value_at_var_threshold"]) == pytest.approx((0.25, 0.5 / 6))
    assert r["change"] == pytest.approx(0.25 - 0.5 / 6) and r["n"] == 13 and r["n_units"] == 6
    # FNMR: genuine .9063 (A) and -.5 (C): at .45 only C fails (1/2); at .866 still only C
    assert rows[("fnmr", "all")]["value_at_ref_threshold"] == rows[("fnmr", "all")]["value_at_var_threshold"] == 0.5


def test_newcombe_method_10_matches_the_published_example_and_reflects_n():
    # Newcombe (1998) Stat. Med. 17:2635, Table II, a = 36, b = 12, c = 2, d = 0: method 10 gives
    # 0.0569 to 0.3404 for p1 - p2 = 0.2; here the difference is oriented variant - reference, (c - b)/n.
    lo, hi = paired_difference_interval(36, 12, 2, 0)
    assert (lo, hi) == pytest.approx((-0.3404, -0.0569), abs=1e-4)
    assert paired_difference_interval(36, 2, 12, 0) == pytest.approx((0.0569, 0.3404), abs=1e-4)
    # Neither side uniquely right (b = c = 0): not [0, 0], and narrower with more faces.
    small, large = paired_difference_interval(28, 0, 0, 7), paired_difference_interval(280, 0, 0, 70)
    assert small[0] < 0 < small[1] and large[0] < 0 < large[1]
    assert small[1] - small[0] > 5 * (large[1] - large[0])
    with pytest.raises(InputError):
        paired_difference_interval(0, 0, 0, 0)


def test_no_discordant_face_gives_an_interval_that_reflects_n():
    ids = [f"s{i}" for i in range(35)]
    right = [i < 28 for i in range(35)]  # 28 of 35 right under both
    ref = pd.DataFrame({"sample_id": ids, "g": ["x"] * 35, "correct": right})
    var = pd.DataFrame({"sample_id": ids, "correct": right})
    row = paired_deltas(ref, var, success_col="correct", group_by=["g"], seed=0)[1]
    assert row["delta"] == 0.0 and row["ci_method"] == "paired_bootstrap_floored"
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx(paired_difference_interval(28, 0, 0, 7))
    assert row["ci_lo"] < -0.05 and row["ci_hi"] > 0.05


def _faces(n_subjects=40, images=3, dim=16, seed=0):
    """Embeddings of n_subjects people in two groups (a, b), `images` each: subject centre + image noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_subjects, dim))
    subjects = np.repeat([f"p{i:02d}" for i in range(n_subjects)], images)
    groups = np.repeat(["a" if i % 2 else "b" for i in range(n_subjects)], images)
    emb = np.repeat(centres, images, axis=0) + 0.6 * rng.normal(size=(n_subjects * images, dim))
    return emb, subjects, groups


def test_paired_error_rates_same_model_is_ratio_one_and_no_change():
    from harness.metrics import paired_error_rates, per_group_error_rates, threshold_at_fmr

    emb, subjects, groups = _faces()
    ref = pair_scores(emb, subjects, groups)
    thr = threshold_at_fmr(ref, 0.01)
    rows = paired_error_rates(ref, pair_scores(emb.copy(), subjects, groups), thr, target_fmr=0.01, n_boot=200)
    marginal = {(r["metric"], r["group"]): r for r in per_group_error_rates(ref, threshold=thr, n_boot=10)}
    for r in rows:
        m = marginal[(r["metric"], r["group"])]
        assert (r["ref_value"], r["var_value"], r["ref_k"], r["n"]) == (m["value"], m["value"], m["k"], m["n"])
        assert r["delta"] == 0 and (r["ci_lo"], r["ci_hi"]) == (0.0, 0.0) and r["p_value"] == 1.0
        assert (r["b"], r["c"]) == (0, 0) and r["ratio"] in (None, 1.0)


def test_paired_error_rates_sees_a_rise_that_marginal_intervals_miss():
    """A planted rise in one group's impostor scores: the paired interval of the change excludes 0, and the
    variant's counts equal the ones per_group_error_rates finds on the variant alone."""
    from harness.metrics import paired_error_rates, per_group_error_rates, threshold_at_fmr

    emb, subjects, groups = _faces(seed=1)
    ref = pair_scores(emb, subjects, groups)
    thr = threshold_at_fmr(ref, 0.01)
    shifted = emb + 0.9 * np.outer(groups == "a", np.ones(emb.shape[1]))  # group a's faces drift together
    var = pair_scores(shifted, subjects, groups)
    rows = {(r["metric"], r["group"]): r for r in paired_error_rates(ref, var, thr, n_boot=300, seed=3)}
    alone = {(r["metric"], r["group"]): r for r in per_group_error_rates(var, threshold=thr, n_boot=10)}
    a = rows[("fmr", "a")]
    assert a["var_k"] == alone[("fmr", "a")]["k"] and a["var_value"] == pytest.approx(alone[("fmr", "a")]["value"])
    assert a["var_value"] > a["ref_value"] and a["ci_lo"] > 0 and a["p_value"] < 0.05
    assert a["ratio"] == pytest.approx(a["var_value"] / a["ref_value"]) and a["ratio_ci_lo"] > 1
    assert a["b"] > a["c"] and a["test"] == "paired subject bootstrap" and a["n_subjects"] == 20


def test_paired_error_rates_refuses_different_comparisons():
    from harness.metrics import paired_error_rates

    emb, subjects, groups = _faces()
    ref = pair_scores(emb, subjects, groups)
    other = pair_scores(emb[3:], subjects[3:], groups[3:])
    with pytest.raises(InputError, match="same comparisons"):
        paired_error_rates(ref, other, 0.5)
