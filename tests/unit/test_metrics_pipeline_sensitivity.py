"""Pipeline sensitivity: paired harness-vs-upstream accuracy per group, exact McNemar, male share, failures to acquire."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.errors import InputError
from harness.metrics import mcnemar_exact
from harness.metrics.pipeline_sensitivity import by_groupings, pipeline_sensitivity


@pytest.mark.parametrize("b, c, expected", [
    (1, 9, 2 * (1 + 10) / 1024),   # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    (0, 5, 2 / 32),                 # 2 * 0.5^5
    (6, 0, 2 / 64),
    (9, 26, None),                  # checked against the binomial sum below
    (4, 4, 1.0),
    (0, 0, 1.0),
])
def test_mcnemar_exact_known_values(b, c, expected):
    if expected is None:
        n, k = b + c, min(b, c)
        expected = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def _frame() -> pd.DataFrame:
    """Group A: 6 faces; group B: 4 faces, one the upstream pipeline missed and one neither pipeline made."""
    rows = [
        # sample, race, label, h_acq, h_pred, u_acq, u_pred, rect
        ("a1", "A", "female", True, "female", True, "female", "dlib-hog"),   # both right
        ("a2", "A", "female", True, "male", True, "female", "dlib-hog"),     # c: only upstream right
        ("a3", "A", "female", True, "male", True, "female", "blazeface"),    # c
        ("a4", "A", "male", True, "male", True, "female", "dlib-hog"),       # b: only harness right
        ("a5", "A", "male", True, "male", True, "male", "dlib-hog"),         # both right
        ("a6", "A", "male", True, "female", True, "female", "dlib-hog"),     # both wrong
        ("b1", "B", "male", True, "male", True, "male", "dlib-hog"),
        ("b2", "B", "male", True, "female", True, "male", "blazeface"),      # c
        ("b3", "B", "female", True, "female", False, None, None),            # upstream FTA
        ("b4", "B", "female", False, None, False, None, None),               # both FTA
    ]
    recs = []
    for sid, race, label, h_acq, h_pred, u_acq, u_pred, rect in rows:
        recs.append({"sample_id": sid, "race": race, "gender": label, "subject": None,
                     "harness_acquired": h_acq, "harness_male": None if h_pred is None else h_pred == "male",
                     "harness_correct": None if h_pred is None else h_pred == label,
                     "upstream_acquired": u_acq, "upstream_male": None if u_pred is None else u_pred == "male",
                     "upstream_correct": None if u_pred is None else u_pred == label, "upstream_rect": rect})
    return pd.DataFrame.from_records(recs)


def test_counts_accuracies_and_mcnemar_per_group():
    rows = {r["group"]: r for r in pipeline_sensitivity(_frame(), group_by=["race"], seed=0, n_boot=200)}
    a, b, all_ = rows["A"], rows["B"], rows["all"]
    assert (a["n_samples"], a["n"], a["fta_harness"], a["fta_upstream"]) == (6, 6, 0, 0)
    assert a["acc_harness"] == pytest.approx(3 / 6) and a["acc_upstream"] == pytest.approx(4 / 6)
    assert a["delta"] == pytest.approx(1 / 6)
    assert (a["b"], a["c"]) == (1, 2) and a["p_value"] == pytest.approx(mcnemar_exact(1, 2))
    assert a["male_share_harness"] == pytest.approx(4 / 6) and a["male_share_upstream"] == pytest.approx(1 / 6)
    assert a["rects"] == {"blazeface": 1, "dlib-hog": 5}
    # Group B: only b1, b2 are paired; b3 (upstream FTA) and b4 (both FTA) count as failures to acquire.
    assert (b["n_samples"], b["n"], b["fta_harness"], b["fta_upstream"]) == (4, 2, 1, 2)
    assert b["acc_harness"] == pytest.approx(1 / 2) and b["acc_upstream"] == pytest.approx(1.0)
    assert (b["b"], b["c"]) == (0, 1)
    assert all_["n"] == 8 and (all_["b"], all_["c"]) == (1, 3) and all_["n_samples"] == 10
    assert all_["fta_harness"] == 1 and all_["fta_upstream"] == 2
    for r in rows.values():
        assert r["ci_lo"] <= r["delta"] <= r["ci_hi"]
        assert r["unit"] == "sample" and r["small"]


def test_a_group_with_no_paired_face_still_reports_its_failures():
    df = _frame()
    df.loc[df["sample_id"].isin(["b1", "b2"]), ["upstream_acquired", "upstream_male", "upstream_correct"]] = \
        [False, None, None]
    rows = {r["group"]: r for r in pipeline_sensitivity(df, group_by=["race"], seed=0, n_boot=50)}
    assert rows["B"]["n"] == 0 and rows["B"]["fta_upstream"] == 4 and rows["B"]["acc_upstream"] is None
    assert rows["B"]["p_value"] is None and (rows["B"]["b"], rows["B"]["c"]) == (0, 0)


def test_harness_failure_makes_the_sample_unpaired_even_if_correct_is_filled():
    df = _frame()
    df.loc[df["sample_id"] == "a1", "harness_acquired"] = False  # a stale correct value must not be counted
    a = next(r for r in pipeline_sensitivity(df, group_by=["race"], seed=0, n_boot=50) if r["group"] == "A")
    assert a["n"] == 5 and a["fta_harness"] == 1


def test_by_groupings_adds_each_attribute_and_one_overall_row():
    rows = by_groupings(_frame(), groupings=[["race", "gender"]], seed=0, n_boot=50)
    keys = [(r["group_by"], r["group"]) for r in rows]
    assert keys.count(("race*gender", "all")) == 1 and not any(g == "all" for gb, g in keys if gb != "race*gender")
    assert {("race", "A"), ("race", "B"), ("gender", "female"), ("gender", "male"), ("race*gender", "A*male")} <= set(keys)
    female = next(r for r in rows if (r["group_by"], r["group"]) == ("gender", "female"))
    assert (female["n_samples"], female["n"], female["b"], female["c"]) == (5, 3, 0, 2)


def test_seeded_interval_is_reproducible():
    one = pipeline_sensitivity(_frame(), group_by=["race"], seed=3, n_boot=200)
    two = pipeline_sensitivity(_frame(), group_by=["race"], seed=3, n_boot=200)
    assert one == two


def test_missing_column_is_one_clear_error():
    with pytest.raises(InputError, match=r"pipeline_sensitivity: missing column\(s\) upstream_correct"):
        pipeline_sensitivity(_frame().drop(columns=["upstream_correct"]), group_by=["race"], seed=0)


def _with_skin(df: pd.DataFrame) -> pd.DataFrame:
    """A second grouping attribute, as a card's derived `skin` gives it: a1-a3 and b1-b2 dark, the rest light."""
    return df.assign(skin=["dark" if sid in {"a1", "a2", "a3", "b1", "b2"} else "light" for sid in df["sample_id"]])


def test_every_grouping_of_the_card_gets_pipeline_sensitivity():
    rows = by_groupings(_with_skin(_frame()), groupings=[["race", "gender"], ["skin", "gender"]], seed=0,
                        n_boot=50)
    keys = [(r["group_by"], r["group"]) for r in rows]
    assert [gb for gb in dict.fromkeys(r["group_by"] for r in rows)] == [
        "race*gender", "race", "gender", "skin*gender", "skin"]  # gender once, though both groupings hold it
    assert keys.count(("race*gender", "all")) == 1 and sum(g == "all" for _, g in keys) == 1
    assert keys.count(("gender", "female")) == 1
    dark = next(r for r in rows if (r["group_by"], r["group"]) == ("skin", "dark"))
    # a1 both right, a2/a3 only upstream right, b1 both right, b2 only upstream right
    assert (dark["n"], dark["b"], dark["c"]) == (5, 0, 3)
    assert {("skin*gender", "dark*female"), ("skin*gender", "light*male")} <= set(keys)


def test_no_discordant_face_does_not_print_zero_zero():
    df = _frame()
    df["upstream_correct"] = df["harness_correct"]  # neither pipeline is uniquely right anywhere
    df["upstream_acquired"] = df["harness_acquired"]
    rows = {r["group"]: r for r in pipeline_sensitivity(df, group_by=["race"], seed=0, n_boot=200)}
    a = rows["A"]
    assert (a["b"], a["c"], a["delta"]) == (0, 0, 0.0)
    assert a["ci_lo"] < -0.1 and a["ci_hi"] > 0.1  # 6 faces: Newcombe's method 10, not [0, 0]


def test_scoring_writes_sensitivity_for_each_grouping_of_the_card(tmp_path):
    """run.json's pipeline_sensitivity rows cover every grouping of the dataset's card, not only the default."""
    import json
    import types

    from harness.scoring import score_run

    df = _with_skin(_frame()).assign(dataset="x")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "gender-dlib.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in df.to_dict(orient="records")))
    doc = {"run_id": "r", "entries": [],
           "data": {"datasets": [{"id": "x", "default_group_by": ["race", "gender"],
                                  "groupings": [["race", "gender"], ["skin", "gender"]]}]},
           "pipeline_sensitivity": {"status": "ok", "models": {"gender-dlib": {
               "status": "ok", "samples": "pipeline/gender-dlib.jsonl"}}}}
    cfg = types.SimpleNamespace(reference_run=None, seed=0, n_boot=50, target_fmr=0.1, cutoffs=())
    rows = score_run(tmp_path, doc, cfg)["pipeline_sensitivity"]["models"]["gender-dlib"]["rows"]
    assert {r["group_by"] for r in rows} == {"race*gender", "race", "gender", "skin*gender", "skin"}
    assert all(r["dataset"] == "x" for r in rows)
    from harness.results.schema import schema_errors
    from tests.unit.test_report_sensitivity import _run
    assert schema_errors(_run(doc["pipeline_sensitivity"]).doc) == []
