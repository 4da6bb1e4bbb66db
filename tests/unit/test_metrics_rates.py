"""Wilson intervals and per-group rate rows."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame

from harness.errors import InputError
from harness.metrics import rate_rows, wilson_interval, zero_count_interval
from harness.metrics.inputs import BAD_COUNTS, MISSING_COLUMNS, NOT_BINARY


def data_root() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


# Newcombe (1998) Stat. Med. 17:857, Table II, method 3 (Wilson score, no continuity correction).
@pytest.mark.parametrize(
    "k,n,lo,hi",
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_table(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_hand_computed_half():
    # k=5, n=10, z=1.959964: centre = (0.5 + z^2/20) / (1 + z^2/10) = 0.5;
    # half = z*sqrt(0.025 + z^2/400) / (1 + z^2/10) = 1.959964*sqrt(0.0346035)/1.3841459 = 0.263402
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.5 - 0.263402, 0.5 + 0.263402), abs=1e-5)


def test_wilson_vectorised_and_edge_cases():
    lo, hi = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert lo[1] == pytest.approx(wilson_interval(5, 10)[0])
    assert lo[0] == 0.0 and hi[2] == 1.0  # k=0 and k=n stay inside [0, 1], unlike Wald
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(InputError) as err:
        wilson_interval(11, 10)
    assert str(err.value) == BAD_COUNTS.format(k=11, n=10)


def small_table() -> pd.DataFrame:
    # female*black: correct 1,1,0 + one FTA (None) -> n=3, k=2, excluded=1
    # female*white: correct 1 -> n=1, k=1
    # male*black:   correct 0,0 -> n=2, k=0
    # one row with missing ethnicity: counts in "all" only
    return pd.DataFrame({
        "gender": ["female"] * 5 + ["male"] * 3,
        "ethnicity": ["black", "black", "black", "black", "white", "black", "black", None],
        "correct": [True, True, False, None, True, False, False, True],
    })


def test_rate_rows_intersectional_hand_counts():
    rows = rate_rows(small_table(), metric="accuracy", success_col="correct", group_by=["gender", "ethnicity"])
    got = {r["group"]: (r["n"], r["k"], r["excluded"], r["small"]) for r in rows}
    # all: 7 non-null successes (8 rows - 1 FTA), k = 1+1+0+1+0+0+1 = 4
    assert got == {
        "all": (7, 4, 1, True),
        "female*black": (3, 2, 1, True),
        "female*white": (1, 1, 0, True),
        "male*black": (2, 0, 0, True),
    }
    assert [r["group"] for r in rows] == ["all", "female*black", "female*white", "male*black"]
    fb = rows[1]
    assert fb["group_by"] == "gender*ethnicity" and fb["metric"] == "accuracy"
    assert fb["value"] == pytest.approx(2 / 3)
    # A group whose every sample failed to acquire is kept (n=0, value null): dropping it would hide it.
    all_fta = small_table().assign(correct=[None] * 4 + [True] * 4)
    fb0 = rate_rows(all_fta, metric="accuracy", success_col="correct", group_by=["gender", "ethnicity"])[1]
    assert (fb0["group"], fb0["n"], fb0["excluded"], fb0["value"], fb0["ci_lo"]) == ("female*black", 0, 4, None, None)
    assert (fb["ci_lo"], fb["ci_hi"]) == pytest.approx(wilson_interval(2, 3))


def test_rate_rows_single_attribute_small_flag_and_unused_category():
    df = small_table()
    df["gender"] = pd.Categorical(df["gender"], categories=["female", "male", "nonbinary"])
    rows = rate_rows(df, metric="accuracy", success_col="correct", group_by=["gender"], small_n=3)
    got = {r["group"]: (r["n"], r["k"], r["small"]) for r in rows}
    # female: 4 non-null (1,1,0,1) k=3; male: 3 non-null (0,0,1) k=1; "nonbinary" has no rows -> omitted
    assert got == {"all": (7, 4, False), "female": (4, 3, False), "male": (3, 1, False)}


def test_rate_rows_errors_name_the_problem():
    df = small_table()
    with pytest.raises(InputError) as err:
        rate_rows(df, metric="accuracy", success_col="correct", group_by=["gender", "race"])
    assert str(err.value) == MISSING_COLUMNS.format(
        what="rate_rows(accuracy)", missing="race", present="gender, ethnicity, correct")
    df["correct"] = ["yes"] * len(df)
    with pytest.raises(InputError) as err:
        rate_rows(df, metric="accuracy", success_col="correct", group_by=["gender"])
    assert str(err.value) == NOT_BINARY.format(what="rate_rows(accuracy)", column="correct", examples=["yes"])


def test_rate_rows_agree_with_fairlearn_metricframe_on_fairface_labels():
    labels = pd.read_csv(data_root() / "fairface-sample" / "labels.csv")
    rng = np.random.default_rng(7)
    # Predictions with a planted per-race error rate, so groups differ and the cross-check is not trivial.
    races = sorted(labels["race"].unique())
    err_rate = labels["race"].map(lambda r: 0.05 + 0.04 * races.index(r)).to_numpy()
    wrong = rng.random(len(labels)) < err_rate
    y_true = (labels["gender"] == "male").to_numpy()
    y_pred = np.where(wrong, ~y_true, y_true)
    df = labels.assign(correct=y_pred == y_true)
    rows = rate_rows(df, metric="accuracy", success_col="correct", group_by=["gender", "race"])

    def accuracy(t, p):
        return float(np.mean(np.asarray(t) == np.asarray(p)))

    mf = MetricFrame(metrics=accuracy, y_true=y_true, y_pred=y_pred,
                     sensitive_features=labels[["gender", "race"]])
    expected = {f"{g}*{r}": v for (g, r), v in mf.by_group.items()}
    got = {r["group"]: r["value"] for r in rows if r["group"] != "all"}
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected)
    assert rows[0]["value"] == pytest.approx(mf.overall)
    assert sum(r["n"] for r in rows[1:]) == len(labels) == rows[0]["n"]


def test_metrics_import_without_any_runtime():
    # A fake process boundary: the runtimes are made unimportable, as on a host that only scores results.
    import subprocess
    import sys

    code = ("import sys\nfor m in ('onnxruntime', 'ai_edge_litert', 'onnx', 'cv2'): sys.modules[m] = None\n"
            "import harness.metrics\nprint(len(harness.metrics.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_each_group_carries_its_minimum_detectable_difference():
    # 3 groups: a (n=200), b (n=20), c (n=20); overall rate 0.8. A group's MDD is the two-proportion test's
    # detectable gap between it and the rest at the overall rate, so the small groups' is far larger.
    from harness.metrics import min_detectable_difference, rate_rows

    df = pd.DataFrame({"g": ["a"] * 200 + ["b"] * 20 + ["c"] * 20,
                       "ok": [1.0] * 160 + [0.0] * 40 + [1.0] * 16 + [0.0] * 4 + [1.0] * 16 + [0.0] * 4})
    rows = {r["group"]: r for r in rate_rows(df, metric="accuracy", success_col="ok", group_by=["g"])}
    assert "mdd" not in rows["all"]
    # measured from the nearer end of [0, 1]: a gap at accuracy 0.8 is a gap at error rate 0.2
    assert rows["b"]["mdd"] == pytest.approx(min_detectable_difference(20, 0.2, 220))
    assert rows["a"]["mdd"] == pytest.approx(min_detectable_difference(200, 0.2, 40))
    assert rows["b"]["mdd"] > rows["a"]["mdd"] > 0


def test_a_zero_count_gets_the_one_sided_clopper_pearson_bound():
    rows = {r["group"]: r for r in rate_rows(small_table(), metric="accuracy", success_col="correct",
                                              group_by=["gender", "ethnicity"])}
    # male*black: 0 of 2 correct -> [0, 1 - 0.05^(1/2)] = [0, 0.7764], not Wilson's two-sided [0, 0.6576]
    mb = rows["male*black"]
    assert (mb["k"], mb["n"], mb["ci_method"]) == (0, 2, "clopper_pearson_upper")
    assert (mb["ci_lo"], mb["ci_hi"]) == pytest.approx((0.0, 1 - 0.05 ** 0.5))
    # female*white: 1 of 1 -> one-sided from below, [0.05, 1]
    fw = rows["female*white"]
    assert fw["ci_method"] == "clopper_pearson_lower" and (fw["ci_lo"], fw["ci_hi"]) == pytest.approx((0.05, 1.0))
    assert rows["female*black"]["ci_method"] == "wilson"
    # rule of three: at n = 300 the exact bound is within 1% of 3/n
    assert zero_count_interval(0, 300)[1] == pytest.approx(3 / 300, rel=0.01)
    with pytest.raises(InputError):
        zero_count_interval(1, 5)
