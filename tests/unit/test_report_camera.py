"""The camera section of the report (harness/report/camera.py) and the interaction test
(harness/metrics/interaction.py), on constructed sweeps whose answers are known.

The runs are real run directories (tests/unit/helpers_results.make_run: real RunWriter, real scoring) over the
London set's 204 images of 102 subjects (two images each), with the per-image outcomes planted: every face right
unmodified; under exposure -2 EV int8 gets the first 8 Black faces wrong (4 subjects), fp32 none; at -4 EV fp32
the first 10 (5 subjects), int8 the first 20 (10 subjects). White faces never change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_results import labels, make_run
from scipy.stats import binomtest

from harness.camera.conditions import parse
from harness.metrics.interaction import paired_interaction, sign_flip_p
from harness.metrics.precision_loss import mcnemar_exact
from harness.report import camera
from harness.report.html import SECTIONS, render_html, render_markdown

VARIANTS = ("onnx-fp32", "onnx-int8")


def _wrong_first(k: int) -> np.ndarray:
    """All right but the first k Black faces in subject order (both images of a subject together)."""
    lab = labels()
    black = lab.index[lab["ethnicity"] == "black"]
    order = lab.loc[black].sort_values(["subject", "image"]).index[:k]
    out = np.ones(len(lab), bool)
    out[order] = False
    return out


def _sweep(root: Path, levels=(0, -4, -2)):
    plan = {0: (0, 0), -2: (0, 8), -4: (10, 20)}
    runs = {}
    for level in levels:
        fp32, int8 = plan[level]
        runs[level] = make_run(root, variants=VARIANTS, model_sha="c" * 64,
                               condition=parse(f"exposure:{level}")[0].to_dict(),
                               outcomes={"onnx-fp32": _wrong_first(fp32), "onnx-int8": _wrong_first(int8)})
    return runs


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("sweep"))


def _first(report, variant, group):
    (_, blocks, _), = report.sweeps
    (block,) = blocks
    return next(r for r in block.first if r["variant"] == variant and r["group"] == group)


def test_sign_flip_is_the_exact_mcnemar_test_for_unit_totals():
    for b, c in ((0, 0), (5, 0), (7, 1), (13, 1), (3, 3), (20, 6)):
        assert sign_flip_p([-1] * b + [1] * c + [0] * 4) == pytest.approx(mcnemar_exact(b, c), rel=1e-12)
    # totals of 2 (both of a subject's faces): the exact distribution of +-2 +-2 +-2 gives P(|S| >= 6) = 2/8
    assert sign_flip_p([2, 2, 2]) == pytest.approx(0.25)
    assert sign_flip_p([2, 1]) == pytest.approx(0.5)  # S in {-3, -1, 1, 3}: |S| >= 3 half the time
    assert sign_flip_p([2]) == 1.0 and sign_flip_p([]) == 1.0 and sign_flip_p([0, 0]) == 1.0
    assert sign_flip_p([2, -2, 1, -1]) == 1.0


def test_paired_interaction_known_answer():
    lab = labels().assign(sample_id=lambda d: d["image"])
    frame = lambda ok: lab.assign(correct=ok)  # noqa: E731
    rows = paired_interaction(frame(_wrong_first(0)), frame(_wrong_first(10)), frame(_wrong_first(0)),
                              frame(_wrong_first(20)), column="correct", group_by=["ethnicity"], seed=1)
    black = next(r for r in rows if r["group"] == "black")
    assert black["n"] == 26 and black["n_units"] == 13 and black["unit"] == "subject"
    assert black["ref_change"] == pytest.approx(-10 / 26) and black["var_change"] == pytest.approx(-20 / 26)
    assert black["interaction"] == pytest.approx(-10 / 26)
    # 10 faces of 5 subjects lost by int8 only: five subject totals of -2, exact p = 2 / 2^5
    assert black["p_value"] == pytest.approx(2 / 32) and black["worse"] == 10 and black["better"] == 0
    assert black["ci_lo"] < black["interaction"] <= black["ci_hi"] <= 0
    white = next(r for r in rows if r["group"] == "white")
    assert white["interaction"] == 0 and white["p_value"] == 1.0 and white["ci_lo"] is None


def test_sweep_found_and_levels_in_order_of_severity(sweep):
    (found,) = camera.find_sweeps(list(sweep.values()))
    assert found.reference.run_id == sweep[0].run_id and found.reference_level == 0
    assert [lv for lv, _ in found.levels] == [-2, -4]  # given as 0, -4, -2
    assert found.direction == "below"


def test_first_level_that_differs_known_answer(sweep):
    report = camera.camera_report(list(sweep.values()), alpha=0.05)
    int8, fp32 = _first(report, "onnx-int8", "black"), _first(report, "onnx-fp32", "black")
    assert int8["tests"][-2] == {"n": 26, "b": 8, "c": 0, "p_value": pytest.approx(2 * 0.5 ** 8)}
    assert int8["first_level"] == -2  # p = 0.0078 at -2 EV
    assert fp32["tests"][-2]["b"] == 0 and fp32["first_level"] == -4  # b10 c0 at -4 EV: p = 0.002
    assert fp32["tests"][-4]["p_value"] == pytest.approx(binomtest(0, 10, 0.5).pvalue)
    white = _first(report, "onnx-int8", "white")
    assert white["first_level"] is None and white["last_level"] == -4
    sweep_ = report.sweeps[0][0]
    assert camera.first_cells(sweep_, white)[-1] == "none up to -4 EV"
    # at alpha 0.005, -2 EV (p = 0.0078) no longer counts; -4 EV (p = 2^-19) does
    strict = camera.camera_report(list(sweep.values()), alpha=0.005)
    assert _first(strict, "onnx-int8", "black")["first_level"] == -4
    assert _first(strict, "onnx-fp32", "black")["first_level"] == -4


def test_interaction_rows_in_the_report(sweep):
    report = camera.camera_report(list(sweep.values()))
    (_, (block,), _), = report.sweeps
    at4 = next(r for r in block.interactions if r["level"] == -4 and r["group"] == "black")
    assert at4["variant"] == "onnx-int8" and at4["reference_variant"] == "onnx-fp32"
    assert at4["interaction"] == pytest.approx(-10 / 26) and at4["p_value"] == pytest.approx(2 / 32)
    at2 = next(r for r in block.interactions if r["level"] == -2 and r["group"] == "black")
    assert at2["p_value"] == pytest.approx(2 / 16)  # 4 subjects, each losing both faces under int8 only


def test_curves_carry_counts_and_intervals(sweep):
    report = camera.camera_report(list(sweep.values()))
    (_, (block,), _), = report.sweeps
    row = next(r for r in block.curves if r["variant"] == "onnx-int8" and r["level"] == -4 and r["group"] == "black")
    assert (row["k"], row["n"]) == (6, 26) and row["ci_lo"] < 6 / 26 < row["ci_hi"]
    assert {r["level"] for r in block.curves} == {0, -2, -4}


def test_html_and_markdown_sections(sweep):
    runs = list(sweep.values())
    page = render_html(runs)
    assert "Camera" in SECTIONS and "first level that differs" in page and "<svg" in page
    assert "none up to -4 EV" in page and "onnx-int8 vs onnx-fp32" in page
    md = render_markdown(runs)
    assert "## Camera: capture-condition sweeps" in md
    assert "| onnx-int8 | accuracy | black | 26 | b8 c0, p=0.0078 | b20 c0, p=1.9e-06 | -2 EV |" in md


def test_no_sweep_says_so(tmp_path):
    run = make_run(tmp_path, variants=VARIANTS)
    assert camera.find_sweeps([run]) == []
    assert "No capture-condition sweep" in render_html([run])
    assert "Camera" not in render_markdown([run])


def test_level_without_comparable_reference_is_left_out(tmp_path):
    # the unmodified run saw other data (manifest sha): not the same faces, so nothing to pair with
    ref = make_run(tmp_path, variants=VARIANTS, manifest_sha="b" * 64, condition=parse("exposure:0")[0].to_dict())
    lvl = make_run(tmp_path, variants=VARIANTS, condition=parse("exposure:-2")[0].to_dict())
    assert camera.find_sweeps([ref, lvl]) == [] and camera.find_sweeps([lvl]) == []
    # a run without --condition on the same data is the unmodified image too
    plain = make_run(tmp_path, variants=VARIANTS)
    (found,) = camera.find_sweeps([plain, lvl])
    assert found.reference.run_id == plain.run_id and found.reference_level is None


def test_verification_sweep_fmr_at_the_unmodified_fp32_threshold(tmp_path):
    # the condition pulls Black faces' embeddings together (more same-group impostor matches); nothing else moves:
    # the same seed draws the same embeddings at both levels
    runs = [make_run(tmp_path, models=("mobilefacenet",), variants=VARIANTS, model_sha="d" * 64,
                     condition=parse(f"exposure:{lv}")[0].to_dict(),
                     fmr_boost={v: boost for v in VARIANTS})
            for lv, boost in ((0, 0.0), (-4, 0.5))]
    report = camera.camera_report(runs)
    ((_, (block,), _),) = report.sweeps
    thr = runs[0].entry("mobilefacenet--onnx-fp32")["metrics"]["verification"]["london-frl"]["threshold"]
    assert any(f"{thr:.4f}" in n for n in block.notes)
    assert any(camera.NO_INTERACTION_VERIFICATION in n for n in block.notes) and not block.interactions
    fmr = {(r["variant"], r["level"], r["group"]): r for r in block.curves if r["metric"] == "fmr"}
    assert fmr[("onnx-fp32", -4, "black")]["value"] > fmr[("onnx-fp32", 0, "black")]["value"]
    assert fmr[("onnx-fp32", -4, "white")]["value"] == fmr[("onnx-fp32", 0, "white")]["value"]
    black = next(r for r in block.first if (r["variant"], r["metric"], r["group"]) == ("onnx-fp32", "fmr", "black"))
    assert black["first_level"] == -4 and black["tests"][-4]["b"] > 0 and black["tests"][-4]["c"] == 0
    white = next(r for r in block.first if (r["variant"], r["metric"], r["group"]) == ("onnx-fp32", "fmr", "white"))
    assert white["first_level"] is None and white["tests"][-4]["b"] == white["tests"][-4]["c"] == 0
    assert "fnmr" in {r["metric"] for r in block.first}


@pytest.mark.parametrize("alpha", ["0", "1", "nan", "-0.1"])
def test_alpha_out_of_range_is_one_line_exit_2(sweep, alpha, capsys):
    from harness.cli import main

    run = sweep[0]
    assert main(["report", str(run.path), "--alpha", alpha, "--results-dir", str(run.path.parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--alpha must be in (0, 1)" in err[0]


def test_corrupt_condition_is_one_line_exit_4(tmp_path, capsys):
    import json

    from harness.cli import main

    run = make_run(tmp_path, variants=VARIANTS, condition=parse("exposure:-2")[0].to_dict())
    doc = json.loads((run.path / "run.json").read_text())
    doc["data"]["condition"]["level"] = "<b>dark</b>"
    (run.path / "run.json").write_text(json.dumps(doc))
    assert main(["report", str(run.path), "-o", str(tmp_path / "r.md"), "--results-dir", str(tmp_path)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json: data.condition is not a condition" in err[0]


def test_detection_sweep_recall(tmp_path):
    runs = [make_run(tmp_path, models=("blazeface",), variants=VARIANTS, model_sha="e" * 64,
                     condition=parse(f"motion:{lv}")[0].to_dict(),
                     outcomes={v: _wrong_first(k) for v in VARIANTS})
            for lv, k in ((1, 0), (15, 12))]
    # motion has no reference level: the 1 px run is a level too, so without an unmodified run there is no sweep
    assert camera.find_sweeps(runs) == []
    plain = make_run(tmp_path, models=("blazeface",), variants=VARIANTS, model_sha="e" * 64,
                     outcomes={v: _wrong_first(0) for v in VARIANTS})
    (found,) = camera.find_sweeps([plain, *runs])
    assert [lv for lv, _ in found.levels] == [1, 15] and found.reference_level is None
    ((_, (block,), _),) = camera.camera_report([plain, *runs]).sweeps
    assert {r["metric"] for r in block.curves} == {"recall"}
    black = next(r for r in block.first if r["variant"] == "onnx-fp32" and r["group"] == "black")
    assert black["tests"][1]["b"] == 0 and black["tests"][15]["b"] == 12 and black["first_level"] == 15
    md = render_markdown([plain, *runs])
    assert "| variant | metric | group | unmodified | 1 px | 15 px |" in md


def test_group_names_are_data_in_the_camera_section(tmp_path):
    evil = "<script>alert(1)</script>|$x$"
    runs = [make_run(tmp_path, variants=VARIANTS, model_sha="c" * 64, rename_groups={"black": evil},
                     condition=parse(f"exposure:{lv}")[0].to_dict(),
                     outcomes={v: _wrong_first(k) for v in VARIANTS})
            for lv, k in ((0, 0), (-4, 10))]
    page = render_html(runs)
    camera_html = page[page.index("<h2>Camera</h2>"):page.index("<h2>Latency distributions</h2>")]
    assert "<script" not in camera_html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in camera_html
    md = render_markdown(runs)
    camera_md = md[md.index("## Camera"):]
    assert "<script" not in camera_md and "&lt;script&gt;alert(1)&lt;/script&gt;\\|$x$" in camera_md


def test_a_level_given_twice_is_used_once_and_named(sweep, tmp_path):
    again = make_run(tmp_path, variants=VARIANTS, model_sha="c" * 64, condition=parse("exposure:-2")[0].to_dict(),
                     outcomes={v: _wrong_first(0) for v in VARIANTS})
    report = camera.camera_report([*sweep.values(), again])
    ((found, _, notes),) = report.sweeps
    assert [lv for lv, _ in found.levels] == [-2, -4]
    assert any(again.run_id in n and "repeats level -2 EV" in n for n in notes)


def test_stratified_gap_rows_and_the_refusal_for_repeated_subjects(tmp_path):
    """The quality-conditioned comparison (harness/metrics/stratified.py) reaches both renderings; london-frl's
    labels hold two images per subject, so the section says why it is not computed rather than a number."""
    n = len(labels())
    runs = [make_run(tmp_path, variants=VARIANTS, model_sha="c" * 64, condition=parse(f"exposure:{lv}")[0].to_dict(),
                     outcomes={v: _wrong_first(k) for v in VARIANTS}, brightness=np.linspace(20, 200, n))
            for lv, k in ((0, 0), (-2, 6))]
    (_, (block,), _), = camera.camera_report(runs).sweeps
    assert {(s["variant"], s["level"]) for s in block.stratified} == {(v, lv) for v in VARIANTS for lv in (0, -2)}
    assert all(s["reason"].startswith("not computed: some subjects have several faces") for s in block.stratified)
    md = render_markdown(runs)
    assert "within brightness tertiles: MH odds ratio" in md and "not computed: some subjects" in md
    assert "Mantel-Haenszel" in render_html(runs)


def test_another_conditions_reference_level_is_the_unmodified_run(sweep, tmp_path):
    """exposure:0 returns the image unchanged, so an h264 run finds its unmodified run in the exposure sweep's 0 EV
    run; the condition's own reference level, or a run without --condition, would be taken first."""
    h264 = make_run(tmp_path, variants=VARIANTS, model_sha="c" * 64, condition=parse("h264:1000")[0].to_dict(),
                    outcomes={"onnx-fp32": _wrong_first(4), "onnx-int8": _wrong_first(9)})
    report = camera.camera_report([*sweep.values(), h264])
    by_name = {s.name: s for s, _, _ in report.sweeps}
    assert set(by_name) == {"exposure", "h264"}
    s = by_name["h264"]
    assert s.reference.run_id == sweep[0].run_id and s.reference_level is None and [lv for lv, _ in s.levels] == [1000]
    assert "against exposure:0 (the unmodified image)" in s.title
    assert by_name["exposure"].reference.run_id == sweep[0].run_id and by_name["exposure"].reference_level == 0
