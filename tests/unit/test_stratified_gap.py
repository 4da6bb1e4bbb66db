"""Mantel-Haenszel comparison of groups within quality bins (harness/metrics/stratified.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.metrics.stratified import stratified_gap


def _faces(cells: list[tuple[str, float, int, int]]) -> pd.DataFrame:
    """cells: (group, brightness, errors, right) -> one row per face, one subject per face."""
    rows = []
    for group, q, errors, right in cells:
        rows += [{"group": group, "q_brightness": q, "correct": False}] * errors
        rows += [{"group": group, "q_brightness": q, "correct": True}] * right
    df = pd.DataFrame(rows)
    df["subject"] = [f"s{i}" for i in range(len(df))]
    # a little spread inside each brightness level so tertiles cut between the levels
    df["q_brightness"] = df["q_brightness"] + np.linspace(0, 1, len(df))[np.random.default_rng(0).permutation(len(df))]
    return df


def _mh(tables) -> float:
    num = sum(t[0][0] * t[1][1] / sum(map(sum, t)) for t in tables)
    den = sum(t[0][1] * t[1][0] / sum(map(sum, t)) for t in tables)
    return num / den


def test_gap_explained_by_brightness_pools_to_one():
    # Error depends only on brightness (40% dark, 20% mid, 5% bright); group b has mostly dark faces. 100 faces
    # at each brightness, so the pooled tertiles are the three levels.
    df = _faces([("a", 30, 4, 6), ("a", 100, 14, 56), ("a", 200, 4, 76),
                 ("b", 30, 36, 54), ("b", 100, 6, 24), ("b", 200, 1, 19)])
    got = stratified_gap(df, success_col="correct", group_by=["group"], reference_group="a")
    (row,) = got["rows"]
    assert got["reference_group"] == "a" and row["bins_used"] == 3 and row["n"] == 140 and row["errors"] == 43
    assert row["crude_or"] > 2 and row["crude_ci"][0] > 1  # the crude gap is real
    assert row["mh_or"] == pytest.approx(1.0, abs=1e-9)  # and brightness explains all of it
    assert row["mh_ci"][0] < 1 < row["mh_ci"][1] and row["p_cmh"] > 0.5


def test_gap_that_remains_within_every_bin():
    tables = [[[20, 30], [8, 42]], [[12, 38], [4, 46]], [[6, 44], [1, 49]]]
    cells = []
    for q, ((eb, rb), (ea, ra)) in zip((30, 100, 200), tables):
        cells += [("b", q, eb, rb), ("a", q, ea, ra)]
    got = stratified_gap(_faces(cells), success_col="correct", group_by=["group"])
    assert got["reference_group"] == "the other groups" and [r["group"] for r in got["rows"]] == ["a", "b"]
    row = got["rows"][1]  # b against every face not in b (here: a)
    assert row["mh_or"] == pytest.approx(_mh(tables))  # the Mantel-Haenszel estimator, by hand
    assert row["mh_ci"][0] > 1 and row["p_cmh"] < 0.001
    assert row["p_homogeneity"] is not None and row["p_homogeneity"] > 0.05  # same odds ratio in every bin


def test_repeated_subjects_are_not_analysed():
    df = _faces([("a", 30, 5, 5), ("b", 30, 5, 5), ("a", 200, 1, 9), ("b", 200, 2, 8)])
    df.loc[1, "subject"] = df.loc[0, "subject"]
    got = stratified_gap(df, success_col="correct", group_by=["group"])
    assert got["rows"] == [] and got["reason"].startswith("not computed: some subjects have several faces")


def test_no_errors_anywhere_gives_a_reason_not_a_ratio():
    df = _faces([("a", 30, 0, 10), ("b", 30, 0, 10), ("a", 200, 0, 10), ("b", 200, 0, 10)])
    rows = stratified_gap(df, success_col="correct", group_by=["group"])["rows"]
    assert [r["reason"] for r in rows] == ["no error in either group"] * 2 and rows[0]["mh_or"] is None
