"""The buyer's page's 1:N part (issue 22 x issue 18): the policy's [identification] table, the verdicts per board x
precision x probe group (harness/report/procurement_1n.py) on planted identification rows, and the page's
"Identification (1:N)" section (harness/report/buyers_1n.py) on a watchlist run scored by the real scorer."""

from __future__ import annotations

import itertools
import re
from html import unescape
from types import SimpleNamespace

import pytest
from scipy.stats import binomtest

from harness.cli import main
from harness.errors import EXIT_USAGE, UsageError
from harness.report import buyers, buyers_1n
from harness.report.procurement import FAIL, PASS, UNSURE, load_policy, parse_policy
from harness.report.procurement_1n import identification_findings, rise_bound
from helpers_watchlist import flip, planted_entry, rate, scored_run, search_record

WATCHLIST = "examples/watchlist.toml"


@pytest.fixture(scope="module")
def policy():
    return load_policy(WATCHLIST)


def mcnemar(b: int, c: int) -> float:
    return 1.0 if b + c == 0 else float(binomtest(b, b + c).pvalue)


def by(found, criterion):
    return {f.group: f for f in found if f.criterion == criterion}


def page_text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", " ", html, flags=re.S))).split())


def board(*entries, target="rpi"):
    """A run as the page reads it: a board (a run.json document) and its entries."""
    return SimpleNamespace(doc={"target": {"id": target}, "launcher": {"kind": "ssh"}}, entries=list(entries),
                           run_id=f"run-{target}")


def test_the_watchlist_policy_is_read_and_bad_1n_keys_are_refused_in_one_line(tmp_path, policy, capsys):
    ip = policy.identification
    assert (ip.target_fpir, ip.max_fpir_multiple, ip.max_fnir, ip.max_search_p90_ms, ip.search_gallery_size) == \
        (0.01, 2.0, 0.30, 20.0, 5000)
    assert "1:N FPIR at most 2x the target 0.01" in policy.sentence()
    # a policy without the table still judges FPIR against `bench run --fpir`'s default target
    assert load_policy("examples/procurement.toml").identification.target_fpir == 0.01
    base = "target_fmr = 0.001\n"
    together = "'max_search_p90_ms' and 'search_gallery_size' go together"
    cases = {"[identification]\nmax_fnir = 0.3": "'target_fpir' is required",
             "[identification]\ntarget_fpir = 1": "'target_fpir' is required",
             "[identification]\ntarget_fpir = true": "'target_fpir' is required",
             "[identification]\ntarget_fpir = 0.01\nfpir = 2": r"unknown key\(s\) fpir; valid: max_fnir",
             "identification = 0.01": "must be a table of the 1:N criteria",
             "[identification]\ntarget_fpir = 0.01\nmax_fnir = 1.5": "'max_fnir' must be a number in",
             "[identification]\ntarget_fpir = 0.01\nmax_fpir_multiple = -1": "'max_fpir_multiple' must be a number",
             "[identification]\ntarget_fpir = 0.01\nmax_search_p90_ms = 5": together,
             "[identification]\ntarget_fpir = 0.01\nsearch_gallery_size = 5000": together,
             "[identification]\ntarget_fpir = 0.01\nmax_search_p90_ms = 5\nsearch_gallery_size = 0.5":
                 "'search_gallery_size' must be a whole number"}
    for text, message in cases.items():
        with pytest.raises(UsageError, match=r"^x.toml \[identification\]: " + message):
            parse_policy(base + text, "x.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "[identification]\ntarget_fpir = 2\n")
    capsys.readouterr()
    assert main(["report", "--devices", "--policy", str(bad), "--results-dir", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.toml [identification]: 'target_fpir' is required" in err[0], err


def test_fpir_against_the_target_passes_fails_or_cannot_tell_at_this_n(policy):
    """Limit 2 x 0.01: x's interval lies under it, y's above it, z (no false candidate in 60 searches of 30
    people) straddles it and is told how many people a zero count needs (rule of three: 300)."""
    own = [rate("fpir", "x", 1, 400, 200, 0.0025, 0.0, 0.012), rate("fpir", "y", 30, 400, 200, 0.075, 0.04, 0.11),
           rate("fpir", "z", 0, 60, 30, 0.0, 0.0, 0.095)]
    found = by(identification_findings(policy, "rpi", planted_entry("onnx-fp32", own)), "1:N FPIR target")
    assert {g: f.verdict for g, f in found.items()} == {"x": PASS, "y": FAIL, "z": UNSURE}
    assert found["y"].value.startswith("7.50x target [4.00, 11.00] (FPIR 0.0750 at 0.500, tuned on fp32 for FPIR 0.01)")
    assert found["y"].counts == "30/400 non-mated searches of 200 people not enrolled"
    assert "a zero count needs about 300 non-mated people" in found["z"].test
    assert "needs about" not in found["x"].test
    none = {**rate("fpir", "v", 0, 1, 0, 0.0, 0.0, 0.0), "n": 0, "value": None, "ci_lo": None, "ci_hi": None,
            "reason": "no searches of this kind"}
    f = by(identification_findings(policy, "rpi", planted_entry("onnx-fp32", [none])), "1:N FPIR target")["v"]
    assert f.verdict == UNSURE and f.value == "not computable: no searches of this kind"


def test_fnir_against_its_ceiling(policy):
    own = [rate("fnir", "x", 40, 400, 50, 0.10, 0.06, 0.16), rate("fnir", "y", 180, 400, 50, 0.45, 0.36, 0.55),
           rate("fnir", "z", 100, 400, 50, 0.25, 0.15, 0.40)]
    found = by(identification_findings(policy, "rpi", planted_entry("onnx-fp32", own)), "1:N FNIR ceiling 0.3")
    assert {g: f.verdict for g, f in found.items()} == {"x": PASS, "y": FAIL, "z": UNSURE}
    assert found["y"].counts == "180/400 mated searches of 50 enrolled people"
    no_ceiling = parse_policy("target_fmr = 0.001\n[identification]\ntarget_fpir = 0.01", "p.toml")
    assert not by(identification_findings(no_ceiling, "rpi", planted_entry("onnx-fp32", own)), "1:N FNIR ceiling 0.3")


def test_precision_loss_is_judged_by_the_paired_flips_never_by_overlapping_intervals(policy):
    """The int8 system misses 24 mates fp32 found and finds none fp32 missed, of the same 400 searches: the
    marginal intervals (fp32 0.20 [0.12, 0.30], int8 0.26 [0.17, 0.36]) overlap, the paired test does not doubt
    it (McNemar p = 1.2e-7): fail. The fp32 watchlist searched by int8 probes flips 2 and 1: cannot tell. With no
    search decided worse among 2,000, the rise is at most the exact bound 0.0018: within 1% of fp32's hit rate
    (0.008) for FNIR, a pass; not within 1% of the allowed FPIR (0.0002), so FPIR cannot tell at this n."""
    own = [rate("fnir", "x", 104, 400, 40, 0.26, 0.17, 0.36), rate("fnir", "w", 400, 2000, 200, 0.20, 0.17, 0.23),
           rate("fpir", "w", 0, 2000, 400, 0.0, 0.0, 0.0075)]
    ref = [rate("fnir", "x", 83, 400, 40, 0.2075, 0.13, 0.30)]
    flips = [flip("fnir", "x", 24, 0, 400, mcnemar(24, 0), "own_gallery"),
             flip("fnir", "x", 2, 1, 400, mcnemar(2, 1), "reference_gallery"),
             flip("fnir", "w", 0, 0, 2000, 1.0, "own_gallery"), flip("fpir", "w", 0, 0, 2000, 1.0, "own_gallery")]
    found = identification_findings(policy, "rpi", planted_entry("onnx-int8", own, reference=ref, flips=flips))
    own_loss = by(found, "1:N FNIR loss vs fp32 (all onnx-int8)")
    ref_loss = by(found, "1:N FNIR loss vs fp32 (fp32 watchlist, onnx-int8 probes)")
    assert own_loss["x"].verdict == FAIL and "p = 1.19e-07" in own_loss["x"].test
    assert own_loss["x"].counts == "24 worse / 0 better of 400 mated (FNIR) searches (all onnx-int8)"
    assert ref_loss["x"].verdict == UNSURE
    # fp32's FNIR on those searches is the variant's errors less the net flips: (104 - 24) / 400 = 0.2
    assert "1 - FNIR (0.800)" in own_loss["x"].value and "allowed 0.00800" in own_loss["x"].value
    assert own_loss["w"].verdict == PASS and rise_bound(0, 2000) == pytest.approx(0.00184, abs=1e-5)
    fpir_loss = by(found, "1:N FPIR loss vs fp32 (all onnx-int8)")["w"]
    assert fpir_loss.verdict == UNSURE and "allowed 0.000200" in fpir_loss.value
    # the fp32 entry itself has no flips: no loss finding
    assert not [f for f in identification_findings(policy, "rpi", planted_entry("onnx-fp32", own))
                if "loss" in f.criterion]


def test_a_significant_gain_is_not_a_failure(policy):
    own = [rate("fnir", "x", 60, 400, 40, 0.15, 0.1, 0.2)]
    flips = [flip("fnir", "x", 0, 20, 400, mcnemar(0, 20), "own_gallery")]
    f = by(identification_findings(policy, "rpi", planted_entry("onnx-int8", own, flips=flips)),
           "1:N FNIR loss vs fp32 (all onnx-int8)")["x"]
    assert f.verdict != FAIL


@pytest.mark.parametrize("sizes, verdict, words", [
    (((600, 1.0, "VALID"), (5000, 12.0, "VALID")), PASS, "p90 12 ms at 5,000 templates"),
    (((5000, 25.0, "VALID"),), FAIL, "p90 25 ms at 5,000 templates"),
    (((5000, 12.0, "INVALID"),), UNSURE, "measurement INVALID (load 6 on 2 cores)"),
    (((600, 1.0, "VALID"), (6000, 15.0, "VALID")), PASS, "at a larger gallery than 5,000"),
    (((600, 30.0, "VALID"), (6000, 40.0, "VALID")), FAIL, "at a smaller gallery than 5,000"),
    (((600, 5.0, "VALID"), (6000, 25.0, "VALID")), UNSURE, "not timed at 5,000 templates"),
    (((600, 5.0, "VALID"), (6000, 15.0, "INVALID")), UNSURE, "not timed at 5,000 templates"),
])
def test_search_speed_against_the_floor_at_the_policy_gallery_size(policy, sizes, verdict, words):
    entry = planted_entry("onnx-int8", [rate("fpir", "x", 1, 400, 200, 0.0025, 0.0, 0.012)],
                          search=search_record(*sizes))
    f = next(f for f in identification_findings(policy, "rpi", entry) if f.criterion.startswith("search speed"))
    assert f.verdict == verdict and words in f"{f.value} {f.test}", f


def test_a_search_not_timed_or_failed_cannot_tell_and_says_why(policy):
    rows = [rate("fpir", "x", 1, 400, 200, 0.0025, 0.0, 0.012)]
    untimed = identification_findings(policy, "rpi", planted_entry("onnx-int8", rows))
    failed = identification_findings(policy, "rpi", planted_entry(
        "onnx-int8", rows, search={"status": "failed", "kind": "infrastructure", "reason": "worker killed"}))
    for found, why in ((untimed, "search not timed on this board"), (failed, "infrastructure: worker killed")):
        f = next(f for f in found if f.criterion.startswith("search speed"))
        assert f.verdict == UNSURE and why in f.test


def test_worst_probe_group_is_tied_within_intervals_and_counts_people_and_searches(policy):
    own = [rate("fpir", "all", 20, 600, 300, 0.033, 0.02, 0.05), rate("fpir", "x", 12, 300, 150, 0.04, 0.02, 0.06),
           rate("fpir", "y", 8, 300, 150, 0.027, 0.012, 0.045), rate("fnir", "x", 40, 400, 50, 0.10, 0.06, 0.16)]
    html = buyers_1n.section([board(planted_entry("onnx-int8", own)), board(target="jetson")], policy)
    text = page_text(html)
    assert "x (tied within intervals with y): 0.0400 [0.0200, 0.0600]" in text
    assert "4.00x 0.01" in text and "150 people, 300 non-mated searches" in text
    assert "search not timed on this board" in text  # a blank cell says why
    assert f"jetson: {buyers_1n.NO_ENTRIES}." in text  # the board with no watchlist is named, with why
    zero = [rate("fpir", g, 0, 300, 150, 0.0, 0.0, 0.02) for g in ("x", "y")]
    assert "none: 0 in every probe group" in page_text(buyers_1n.section([board(planted_entry("onnx-int8", zero))],
                                                                         policy))
    # the data-set part: people not enrolled against the rule of three at the target
    card = page_text(buyers_1n.dataset_part([board(planted_entry("onnx-int8", own))], policy))
    assert "300 people not enrolled" in card and "short by 150 people" in card


@pytest.fixture(scope="module")
def watchlist_page(tmp_path_factory, policy):
    run = scored_run(tmp_path_factory.mktemp("watchlist"))
    return run, buyers.render([run], policy=policy)


def test_the_page_judges_a_scored_watchlist_run_every_probe_group_with_the_rest(watchlist_page, policy):
    """A watchlist run scored by the real scorer (helpers_watchlist): the section is there, every probe group of the
    deployed system has its FPIR verdict with counts, the 1:N findings are ranked with the 1:1 ones in the decision
    section, and the false candidates' groups are the scorer's."""
    run, html = watchlist_page
    assert "<h2 id=identification>Identification (1:N)</h2>" in html
    section = html[html.index("<h2 id=identification>"):html.index("<h2 id=pareto>")]
    text = page_text(section)
    entry = run.entry("mobilefacenet--onnx-int8")
    sec = entry["metrics"]["identification"]["syn"]
    t = next(x for x in sec["thresholds"] if x["kind"] == "tuned_fpir")
    for r in sec["own_gallery"]["rates"]:
        if r["metric"] == "fpir" and r["threshold"] == t["value"]:
            assert f"{r['k']}/{r['n']} non-mated searches of {r['n_subjects']} people not enrolled" in text
    for r in sec["own_gallery"]["false_candidates"]:
        if r["threshold"] == t["value"]:
            assert f"{r['candidate_group']}: {r['n_false']}" in text
    assert section.count("<svg") == 1  # FPIR against gallery size, one panel per precision
    decision = page_text(html[html.index("<h2 id=decision>"):html.index("<h2 id=verdicts>")])
    assert "1:N watchlist search (groups)" in decision and "1:N FPIR target" in decision
    found = buyers.findings([run], policy)
    assert [f.verdict for f in found] == sorted((f.verdict for f in found), key=[FAIL, UNSURE, PASS].index)
    assert {"1:N FPIR target", "FMR target"} <= {f.criterion for f in found}


def test_the_fpir_chart_keeps_to_the_palette_and_dashes(watchlist_page):
    from test_report_buyers import CVD, MIN_DELTA_E, _cvd_distance, _series

    from harness.report import charts

    _, html = watchlist_page
    section = html[html.index("<h2 id=identification>"):html.index("<h2 id=pareto>")]
    svg = re.findall(r"<svg.*?</svg>", section, flags=re.S)[0]
    series = _series(svg)
    assert series and {c for c, _ in series} <= {c.lower() for c in charts.COLORS}
    for (c1, d1), (c2, d2) in itertools.combinations(series, 2):
        if d1 == d2 and c1 != c2:
            assert all(_cvd_distance(c1, c2, cvd) >= MIN_DELTA_E for cvd in CVD)
