"""`bench trend`: a rate's change is flagged only when its test says so (harness/report/change_test.py).

Nightly runs are built by the real RunWriter and scoring (helpers_results.make_run); only the per-face outcomes
are planted. A +17.5% step in errors made of faces flipping both ways is noise; a step made of new errors is not.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers_results import labels, make_run
from rich.console import Console

from harness.commands.trend import print_trends
from harness.report.change_test import ChangeTester
from harness.report.trend import change_points, trends

N_FACES = len(labels())
ENTRY = "gender-dlib--onnx-int8"


def _wrong(k: int, rng: np.random.Generator | None = None, first: int = 0) -> np.ndarray:
    """Correctness per face with k errors: at random faces (rng) or at faces first .. first + k - 1."""
    ok = np.ones(N_FACES, bool)
    ok[rng.choice(N_FACES, k, replace=False) if rng is not None else np.arange(first, first + k)] = False
    return ok


def _nights(tmp_path, outcomes: list[np.ndarray], manifests: list[str] | None = None):
    return [make_run(tmp_path, variants=("onnx-fp32", "onnx-int8"), seed=night, outcomes={"onnx-int8": o},
                     manifest_sha=(manifests or ["a" * 64] * len(outcomes))[night])
            for night, o in enumerate(outcomes)]


def _int8(series):
    (s,) = [s for s in series if s.entry == ENTRY]
    return s


def test_a_17_percent_step_of_faces_flipping_both_ways_is_noise(tmp_path):
    # 80 -> 94 errors of 204 faces (+17.5%, 20 vs 23.5 scaled up so the level moves past asv's 5%), each night's
    # errors at other faces: the discordant faces run both ways.
    rng = np.random.default_rng(17)
    runs = _nights(tmp_path, [_wrong(80 if night < 4 else 94, rng) for night in range(8)])
    s = _int8(trends(runs, "accuracy"))
    assert 4 in change_points(s.values)  # asv's rule alone would flag the step ...
    assert s.steps == []  # ... its test does not
    (cand,) = [st for st in s.noise if st.index == 4]
    t = cand.test
    assert t.test == "mcnemar" and t.unit == "face" and t.n == N_FACES and t.p >= 0.05 and not t.flagged
    assert t.b > 0 and t.c > 0 and t.b - t.c == 94 - 80  # the net change is the error count's
    assert t.run_before == runs[3].run_id and t.run_after == runs[4].run_id
    assert s.newest is not None and not s.newest.flagged
    console = Console(width=80, record=True)
    print_trends(console, [s], "accuracy over 8 run(s)")
    text = " ".join(console.export_text().split())
    assert f"not flagged: cpu gender-dlib from run {runs[4].run_id}" in text
    assert f"exact McNemar, paired by face: n={N_FACES} b={t.b} c={t.c} p={t.p:.2g} >= 0.05" in text
    assert "[1]" not in text
    from harness.report.buyers import trend_page

    page = trend_page([s], "accuracy")  # the chart page lists the candidate, not flagged, with its test
    assert f"<td>not flagged: exact McNemar, paired by face: n={N_FACES} b={t.b} c={t.c}" in page


def test_a_step_of_new_errors_on_the_same_faces_is_flagged_with_its_b_c_p(tmp_path, capsys):
    # 40 errors every night at the same faces, then 40 more faces wrong: b = 40, c = 0.
    runs = _nights(tmp_path, [_wrong(40 if night < 4 else 80) for night in range(8)])
    s = _int8(trends(runs, "accuracy"))
    (step,) = s.steps
    assert step.index == 4 and step.run_id == runs[4].run_id and step.test.flagged
    assert (step.test.test, step.test.n, step.test.b, step.test.c) == ("mcnemar", N_FACES, 40, 0)
    assert step.test.p == pytest.approx(2 * 0.5 ** 40)
    assert s.noise == [] and s.newest.b == s.newest.c == 0 and s.newest.p == 1.0
    console = Console(width=80, record=True)
    print_trends(console, [s], "accuracy over 8 run(s)")
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert f"[1] cpu gender-dlib from run {runs[4].run_id}" in " ".join(text.split())
    assert f"n={N_FACES} b=40 c=0 p=1.8e-12 < 0.05" in " ".join(text.split())
    d = s.to_dict()["steps"][0]["test"]
    assert d["b"] == 40 and d["c"] == 0 and d["flagged"] is True
    # The command says the same as JSON: the alpha, the step's test with b, c, p.
    import json

    from harness.cli import main

    capsys.readouterr()  # what the console above printed
    assert main(["trend", "--results-dir", str(tmp_path), "--metric", "accuracy", "--entry", ENTRY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["alpha"] == 0.05
    (js,) = out["series"]
    assert [st["run_id"] for st in js["steps"]] == [runs[4].run_id] and js["steps"][0]["test"]["b"] == 40
    # A stricter alpha than the evidence leaves the same step unflagged.
    assert _int8(trends(runs, "accuracy", alpha=1e-13)).steps == []


def test_the_newest_night_is_tested_against_the_one_before(tmp_path):
    runs = _nights(tmp_path, [_wrong(40), _wrong(40), _wrong(70)])  # too short for a change point
    s = _int8(trends(runs, "accuracy"))
    (step,) = s.steps
    assert step.newest and step.index == 2 and (step.test.b, step.test.c) == (30, 0) and step.test.flagged
    assert step.before == s.values[1] and step.after == s.values[2]


def test_runs_on_other_data_fall_back_to_fishers_exact_test_and_say_so(tmp_path):
    manifests = ["a" * 64] * 4 + ["b" * 64] * 4  # the data set changed under the board between nights 3 and 4
    runs = _nights(tmp_path, [_wrong(40 if night < 4 else 80) for night in range(8)], manifests)
    s = _int8(trends(runs, "accuracy"))
    (step,) = s.steps
    t = step.test
    assert t.test == "fisher" and t.b is None and "different data" in t.unpaired_because
    assert (t.k_before, t.n_before, t.k_after, t.n_after) == (40, N_FACES, 80, N_FACES) and t.flagged
    assert "Fisher exact, unpaired (" in step.rule() and "errors 40/204 -> 80/204" in step.rule()
    assert s.newest.test == "mcnemar"  # the last two nights share their data again: paired
    # a +17.5% change (40 -> 47 errors) across the same data change: the fallback does not flag it either
    few = _nights(tmp_path / "few", [_wrong(40), _wrong(47)], manifests[3:5])
    t = ChangeTester(few, "accuracy").test(few[0].run_id, few[1].run_id, ENTRY, None)
    assert t.test == "fisher" and (t.k_before, t.k_after) == (40, 47) and t.p >= 0.05 and not t.flagged


def test_fmr_per_group_is_tested_pair_by_pair_at_each_nights_threshold(tmp_path):
    runs = [make_run(tmp_path, models=("mobilefacenet",), variants=("onnx-fp32", "onnx-int8"), seed=night,
                     fmr_boost={"onnx-int8": 0.3 if night >= 2 else 0.0}) for night in range(4)]
    series = {s.group: s for s in trends(runs, "fmr_per_group") if s.entry == "mobilefacenet--onnx-int8"}
    black = series["black"]
    (step,) = [st for st in black.steps if st.index == 2]
    assert step.test.test == "mcnemar" and step.test.unit == "comparison pair" and step.test.flagged
    assert step.test.b > step.test.c  # the planted rise: impostor pairs newly matched
    tester = ChangeTester(runs, "fmr_per_group")
    again = tester.test(runs[1].run_id, runs[2].run_id, "mobilefacenet--onnx-int8", "black")
    assert (again.n, again.b, again.c) == (step.test.n, step.test.b, step.test.c)
    # n: the black group's same-group impostor pairs (all images of different black subjects)
    lab = labels()
    black_faces = lab[lab["ethnicity"] == "black"]
    per_subject = black_faces.groupby("subject").size().to_numpy()
    assert again.n == (per_subject.sum() ** 2 - (per_subject ** 2).sum()) // 2


def test_latency_keeps_asvs_rule_and_says_so(tmp_path):
    runs = [make_run(tmp_path, variants=("onnx-fp32",), latency_ms={"onnx-fp32": 2.0 if n < 5 else 2.6}, seed=n,
                     n_timings=200) for n in range(8)]
    (s,) = trends(runs, "p90_ms")
    (step,) = s.steps
    assert step.test is None and step.rule() == "asv step rule: levels differ by >= 5%, no per-sample test"
    assert s.newest is None


def test_alpha_outside_0_1_is_a_usage_error(tmp_path, capsys):
    from harness.cli import main

    for bad in ("0", "1", "nan", "-0.1"):
        assert main(["trend", "--results-dir", str(tmp_path), "--alpha", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--alpha must lie strictly between 0 and 1" in err[0]
