"""Disparity summaries, GARBE/FDR, minimum detectable difference and disparity rows."""

from __future__ import annotations

import math

import pytest

from harness.errors import InputError
from harness.metrics import (
    disparity_rows, fdr, garbe, gini, max_geomean, max_min_diff, max_min_ratio, min_detectable_difference,
    rate_row, verification_disparity_rows,
)
from harness.metrics.inputs import UNKNOWN_METRIC

FMR = [0.001, 0.002, 0.003]
FNMR = [0.01, 0.01, 0.04]


def test_simple_summaries_worked_example():
    assert max_min_ratio(FMR).value == pytest.approx(3.0)  # 0.003 / 0.001
    assert max_min_diff(FMR).value == pytest.approx(0.002)  # 0.003 - 0.001
    # geomean = (0.001*0.002*0.003)^(1/3) = (6e-9)^(1/3) = 1.817121e-3; 0.003 / 1.817121e-3 = 1.650964
    s = max_geomean(FMR)
    assert (s.value, s.n_groups) == (pytest.approx(1.650964, abs=1e-6), 3)


def test_gini_with_small_sample_correction():
    # FMR: mean 0.002; sum_ij |xi-xj| = 2*(0.001+0.002+0.001) = 0.008; 0.008/(2*9*0.002) = 0.2222; *3/2 = 1/3
    assert gini(FMR) == pytest.approx(1 / 3)
    # FNMR: mean 0.02; sum = 2*(0+0.03+0.03) = 0.12; 0.12/(2*9*0.02) = 1/3; *3/2 = 0.5
    assert gini(FNMR) == pytest.approx(0.5)
    # One group holding all the error reaches exactly 1 thanks to n/(n-1): 4/(2*9*(1/3)) * 3/2 = 1
    assert gini([0.0, 0.0, 1.0]) == pytest.approx(1.0)
    assert gini([0.0, 0.0]) == 0.0 and math.isnan(gini([0.3]))


def test_garbe_and_fdr_worked_example():
    # GARBE = alpha*G(FMR) + (1-alpha)*G(FNMR) = 0.5*(1/3) + 0.5*0.5 = 0.416667; alpha 0.25: 1/12 + 0.375
    assert garbe(FMR, FNMR).value == pytest.approx(0.416667, abs=1e-6)
    assert garbe(FMR, FNMR, alpha=0.25).value == pytest.approx(1 / 12 + 0.375)
    # FDR = 1 - (0.5*A + 0.5*B), A = 0.003-0.001 = 0.002, B = 0.04-0.01 = 0.03 -> 1 - 0.016 = 0.984
    s = fdr(FMR, FNMR)
    assert (s.value, s.n_groups) == (pytest.approx(0.984), 3)


def test_zero_rates_are_infinite_not_smoothed():
    assert max_min_ratio([0.0, 0.1]).value == math.inf
    assert max_geomean([0.0, 0.1, 0.2]).value == math.inf
    assert max_min_ratio([0.0, 0.0]).value == 1.0  # all equal
    assert max_geomean([0.0, 0.0]).value == 1.0
    assert math.isnan(max_min_ratio([0.2]).value)


def test_min_detectable_difference_against_fleiss_sample_size():
    # Fleiss et al. (2003): p1=0.5 vs p2=0.6 at alpha 0.05, power 0.8 needs
    # n = (1.96*sqrt(2*.55*.45) + 0.8416*sqrt(.25+.24))^2 / 0.1^2 = (1.37898+0.58912)^2/0.01 = 387.3 per group,
    # so with n = 388 per group the MDD from 0.5 is just under 0.1.
    assert min_detectable_difference(388, 0.5) == pytest.approx(0.1, abs=1e-3)
    assert min_detectable_difference(388, 0.5) < 0.1 < min_detectable_difference(380, 0.5)
    # Unequal groups: a tiny second group dominates.
    assert min_detectable_difference(1000, 0.1, 10) > min_detectable_difference(1000, 0.1, 1000)
    # p1 = 0 still needs a positive difference; one sample each can never reach 80% power.
    assert 0 < min_detectable_difference(20, 0.0) < 1
    assert min_detectable_difference(1, 0.0) == math.inf


def rows_for(threshold, counts):
    common = {"metric": "fmr", "group_by": "g", "threshold": threshold}
    total_n, total_k = sum(n for n, _ in counts.values()), sum(k for _, k in counts.values())
    return [rate_row(group="all", n=total_n, k=total_k, **common)] + [
        rate_row(group=g, n=n, k=k, **common) for g, (n, k) in counts.items()]


def test_disparity_rows_per_context_with_power():
    rows = (rows_for(0.5, {"a": (1000, 10), "b": (1000, 50), "c": (10, 0)})
            + rows_for(0.8, {"a": (1000, 10), "b": (1000, 50)}))
    out = disparity_rows(rows, "fmr")
    by = {(r["threshold"], r["summary"]): r for r in out}
    assert len(out) == 10  # 5 summaries x 2 thresholds; the "all" rows never take part
    # threshold 0.5: values a .01, b .05, c 0 -> ratio infinite, diff .05; c has n=10 -> gap not detectable
    r = by[(0.5, "max_min_ratio")]
    assert (r["value"], r["infinite"], r["max_group"], r["min_group"], r["n_groups"]) == (None, True, "b", "c", 3)
    assert by[(0.5, "max_min_diff")]["value"] == pytest.approx(0.05)
    # single-rate FDR = 1 - 0.05; Gini of (.01, .05, 0): mean .02, sum|xi-xj| over ordered pairs = 2*(.04+.01+.05)
    # = .2, G = 3/2 * .2 / (2 * 9 * .02) = 0.8333
    assert by[(0.5, "fdr")]["value"] == pytest.approx(0.95)
    assert by[(0.5, "gini")]["value"] == pytest.approx(0.2 * 1.5 / (2 * 9 * 0.02))
    assert r["underpowered"] and r["mdd"] > 0.05
    # threshold 0.8: a .01 vs b .05 with 1000 each -> ratio 5; MDD(1000, .01, 1000) ~ 0.013 < 0.04 -> powered
    r = by[(0.8, "max_min_ratio")]
    assert (r["value"], r["infinite"], r["underpowered"]) == (pytest.approx(5.0), False, False)
    assert r["mdd"] == pytest.approx(min_detectable_difference(1000, 0.01, 1000))


def test_disparity_rows_unknown_metric_message():
    with pytest.raises(InputError) as err:
        disparity_rows(rows_for(0.5, {"a": (10, 1), "b": (10, 2)}), "accuracy")
    assert str(err.value) == UNKNOWN_METRIC.format(what="disparity_rows", metric="accuracy", present="fmr")


def test_verification_disparity_rows_garbe_fdr():
    groups = ["x", "y", "z"]
    rows = []
    for metric, values in (("fmr", FMR), ("fnmr", FNMR)):
        n = 100_000
        rows += [rate_row(metric=metric, group_by="g", group=g, n=n, k=round(v * n), threshold=0.3)
                 for g, v in zip(groups, values)]
    out = {r["summary"]: r for r in verification_disparity_rows(rows)}
    assert out["garbe"]["value"] == pytest.approx(0.416667, abs=1e-6)
    assert out["fdr"]["value"] == pytest.approx(0.984)
    assert out["fdr"]["metric"] == "fmr+fnmr" and out["fdr"]["threshold"] == 0.3
    assert not out["garbe"]["underpowered"]  # gaps of 0.002 and 0.03 over 100k pairs each are detectable
