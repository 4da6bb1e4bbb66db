"""bench gate: policy parsing, pass/fail flips at the measured values, Mann-Whitney latency, exit codes, JUnit."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET

import pytest

from harness.commands import gate as gate_cmd
from harness.errors import EXIT_GATE_BOTH, EXIT_GATE_FAIRNESS, EXIT_GATE_PERF, EXIT_OK, InputError, UsageError
from harness.report.gate import gate, parse_policy
from harness.report.summary import summarize
from helpers_results import make_run

INT8 = "gender-dlib--onnx-int8"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    base = make_run(root, latency_ms={"onnx-fp32": 2.0, "onnx-int8": 1.5}, seed=1)
    cur = make_run(root, latency_ms={"onnx-fp32": 2.0, "onnx-int8": 1.5 * 1.25}, drop={"onnx-int8": {"black": 0.2}},
                   seed=2)
    return root, base, cur


def policy(*checks: str) -> str:
    return "\n".join(f"[[check]]\n{c}\n" for c in checks)


def test_retention_flips_when_tightened_past_measured_value(runs):
    _, _, cur = runs
    # one "worst" row per grouping (ethnicity, gender, gender*ethnicity): the gate judges every group of every one
    worst = min(r["retention"] for r in cur.entry(INT8)["metrics"]["reference"]["retention"] if r["group"] == "worst")
    loose = parse_policy(policy(f'kind="retention"\nmetric="accuracy"\nmin={worst - 1e-6}\nscope="every_group"'))
    tight = parse_policy(policy(f'kind="retention"\nmetric="accuracy"\nmin={worst + 1e-6}\nscope="every_group"'))
    assert gate(loose, cur).exit_code == EXIT_OK
    res = gate(tight, cur)
    assert res.exit_code == EXIT_GATE_FAIRNESS
    (fail,) = res.failures
    assert fail.entry == INT8 and "retention below" in fail.message and f"{worst:.4f}" in fail.message
    # the fp32 reference entry has no retention rows: skipped, not passed
    assert [o.skipped for o in res.outcomes if o.entry == "gender-dlib--onnx-fp32"][0].startswith("no accuracy")


def test_rate_and_disparity_flip_at_measured_value(runs):
    _, _, cur = runs
    s = summarize(cur, cur.entry(INT8))
    # one max_geomean row per grouping; a check without group_by judges them all, so its edge is the largest
    d = max(r["value"] for r in cur.entry(INT8)["metrics"]["disparities"]
            if r["summary"] == "max_geomean" and r["metric"] == "accuracy")
    ok = parse_policy(policy(f'kind="rate"\nmetric="accuracy"\nmin={s.overall - 1e-9}\nentry="{INT8}"',
                             f'kind="disparity"\nmetric="accuracy"\nsummary="max_geomean"\nmax={d + 1e-9}\nentry="{INT8}"'))
    bad = parse_policy(policy(f'kind="rate"\nmetric="accuracy"\nmin={s.overall + 1e-9}\nentry="{INT8}"',
                              f'kind="disparity"\nmetric="accuracy"\nsummary="max_geomean"\nmax={d - 1e-9}\nentry="{INT8}"'))
    assert gate(ok, cur).exit_code == EXIT_OK
    res = gate(bad, cur)
    assert len(res.failures) == 2 and res.exit_code == EXIT_GATE_FAIRNESS
    assert len(res.outcomes) == 2  # the entry glob kept the fp32 entry out


def test_latency_regression_needs_size_and_significance(runs, tmp_path):
    _, base, cur = runs
    lat = parse_policy(policy('kind="latency"\nstat="p90_ms"\nmax_slowdown_pct=10\ntest="mannwhitney"\nalpha=0.01'))
    res = gate(lat, cur, base)
    assert res.exit_code == EXIT_GATE_PERF
    (fail,) = res.failures
    assert fail.entry == INT8 and "latency regression" in fail.message and "Mann-Whitney p=" in fail.message
    # the same 25% slowdown is allowed when the bound is wider than it
    wide = parse_policy(policy('kind="latency"\nstat="p90_ms"\nmax_slowdown_pct=40'))
    assert gate(wide, cur, base).exit_code == EXIT_OK
    # a 2x slowdown on 4 timings each cannot be significant at 0.01 (smallest one-sided p is 1/70): no regression
    few_b = make_run(tmp_path, latency_ms={"onnx-fp32": 2.0, "onnx-int8": 1.0}, n_timings=4, seed=3)
    few_c = make_run(tmp_path, latency_ms={"onnx-fp32": 2.0, "onnx-int8": 2.0}, n_timings=4, seed=4)
    assert gate(lat, few_c, few_b).exit_code == EXIT_OK


def test_both_categories_and_invalid_measurement(tmp_path, runs):
    _, base, _ = runs
    cur = make_run(tmp_path, latency_ms={"onnx-fp32": 2.0, "onnx-int8": 3.0}, drop={"onnx-int8": {"black": 0.3}},
                   invalid={"onnx-fp32": ["cpu frequency drifted 1.20 > 1.05"]}, seed=5)
    pol = parse_policy(policy('kind="latency"\nstat="p50_ms"\nmax_slowdown_pct=10',
                              'kind="retention"\nmetric="accuracy"\nmin=0.99'))
    res = gate(pol, cur, base)
    assert res.exit_code == EXIT_GATE_BOTH
    fp32 = next(o for o in res.failures if o.entry == "gender-dlib--onnx-fp32")
    assert "run measurement INVALID (cpu frequency drifted 1.20 > 1.05)" in fp32.message


@pytest.mark.parametrize(("check", "error"), [
    ('kind="rate"\nmetric="acuracy"\nmin=0.9', "check #1 (kind='rate'): unknown metric 'acuracy'"),
    ('kind="speed"\nmetric="accuracy"', "check #1: unknown kind 'speed'"),
    ('kind="latency"\nstat="p42_ms"\nmax_slowdown_pct=5', "unknown stat 'p42_ms'"),
    ('kind="latency"\nstat="p90_ms"\nmax_slowdown_pct=5\ntest="ttest"', "unknown test 'ttest'"),
    ('kind="disparity"\nmetric="fmr"\nsummary="max_geomean"\nmaxx=2', "unknown key(s) maxx"),
    ('kind="retention"\nmetric="fmr"\nmin=0.99', "retention needs a higher-is-better metric"),
])
def test_bad_policy_is_usage_error_naming_the_check(check, error):
    with pytest.raises(UsageError) as exc:
        parse_policy(policy(check), "p.toml")
    assert error in str(exc.value) and exc.value.exit_code == 2


def test_latency_without_baseline_and_bad_toml(runs):
    _, _, cur = runs
    with pytest.raises(UsageError, match="give --baseline RUN"):
        gate(parse_policy(policy('kind="latency"\nstat="p90_ms"\nmax_slowdown_pct=5')), cur)
    with pytest.raises(InputError, match="p.toml: not valid TOML"):
        parse_policy("[[check]\nkind=", "p.toml")


def test_example_policy_and_junit_through_the_command(runs, tmp_path, capsys):
    root, base, cur = runs
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir")
    gate_cmd.register(parser.add_subparsers())
    junit = tmp_path / "out" / "gate.xml"
    pol = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
    args = parser.parse_args(["--results-dir", str(root), "gate", "--policy", str(pol), "--baseline",
                              base.run_id, cur.run_id[:-2], "--junit", str(junit)])
    code = args.func(args)
    assert code == EXIT_GATE_BOTH  # int8 lost 20 points on one group and got 25% slower
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    n_checks_entries = 2 + 0 + 2 + 2  # retention, disparity (glob: mobilefacenet only), latency, rate: 2 entries
    assert len(cases) == n_checks_entries == int(suite.get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures) >= 2
    assert {f.find("failure").get("type") for f in failures} == {"perf", "fairness"}
    assert "FAIL [fairness]" in capsys.readouterr().err


def test_fdr_is_bounded_from_below_and_a_disparity_check_needs_a_bound():
    # FDR is 1 when fair and falls with the gap, so its check takes `min`; ratios and Gini take `max`.
    policy = parse_policy('[[check]]\nkind = "disparity"\nmetric = "accuracy"\nsummary = "fdr"\nmin = 0.9\n')
    check = policy.checks[0]
    entry = {"metrics": {"disparities": [
        {"metric": "accuracy", "group_by": "race*gender", "summary": "fdr", "value": 0.514, "n_groups": 14,
         "underpowered": False, "dataset": "fairface-sample"}]}}
    message = check.evaluate(None, entry, None)
    assert message is not None and "0.5140" in message and ">= 0.9" in message
    entry["metrics"]["disparities"][0]["value"] = 0.95
    assert check.evaluate(None, entry, None) is None
    with pytest.raises(UsageError, match="give 'max' and/or 'min'"):
        parse_policy('[[check]]\nkind = "disparity"\nmetric = "accuracy"\nsummary = "gini"\n')


def test_rate_check_reads_subject_weighted_verification_rows(tmp_path):
    """The gate reads `value` (the subject-weighted rate); a rate that is not computable is skipped, not failed."""
    import numpy as np

    from harness.metrics import pair_scores, per_group_error_rates

    rng = np.random.default_rng(0)
    emb = np.repeat(rng.standard_normal((6, 16)), [1, 1, 1, 2, 2, 2], axis=0)  # g1: one image each; g2: two
    scores = pair_scores(emb + 0.3 * rng.standard_normal(emb.shape), list("abcddeeff"),
                         ["g1"] * 3 + ["g2"] * 6, group_by="grp")
    rows = per_group_error_rates(scores, threshold=0.5, n_boot=50)
    run = make_run(tmp_path, models=("mobilefacenet",))
    entry = "mobilefacenet--onnx-int8"
    run.entry(entry)["metrics"]["rates"] = rows
    g2 = next(r for r in rows if r["metric"] == "fnmr" and r["group"] == "g2")
    g1 = next(r for r in rows if r["metric"] == "fnmr" and r["group"] == "g1")
    assert g1["value"] is None and g1["reason"] == "no genuine pairs"
    check = f'kind="rate"\nmetric="fnmr"\ngroup="every_group"\nentry="{entry}"\nmax='
    assert gate(parse_policy(policy(check + str(g2["value"]))), run).exit_code == EXIT_OK
    res = gate(parse_policy(policy(check + str(g2["value"] - 1e-9))), run)
    assert res.exit_code == EXIT_GATE_FAIRNESS and "grp=g2" in res.failures[0].message
    assert "g1" not in res.failures[0].message
