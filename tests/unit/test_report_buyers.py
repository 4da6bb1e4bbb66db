"""The buyer's page (harness/report/buyers.py) and the procurement policy it decides against
(harness/report/procurement.py): verdicts from paired tests, the data-set card, the system description with
provenance, reasons for blank cells, and chart colours that survive colour-vision deficiency."""

from __future__ import annotations

import itertools
import re
from html import unescape

import numpy as np
import pytest

from harness.cli import main
from harness.errors import EXIT_USAGE, InputError, UsageError
from harness.report import buyers, charts
from harness.report.procurement import FAIL, PASS, UNSURE, load_policy, needed_subject_pairs, parse_policy
from helpers_results import planted_boards

POLICY = "examples/procurement.toml"


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    root = tmp_path_factory.mktemp("boards")
    return root, planted_boards(root)


def page_text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_policy_file_is_read_and_bad_ones_are_refused_in_one_line(tmp_path):
    p = load_policy(POLICY)
    assert (p.target_fmr, p.retention, p.max_p90_ms, p.floor["accuracy"]) == (0.001, 0.99, 50.0, 0.9)
    with pytest.raises(UsageError, match=r"^x.toml: unknown key\(s\) targt_fmr"):
        parse_policy("targt_fmr = 0.001", "x.toml")
    for bad in ("target_fmr = 2", "target_fmr = 0", "target_fmr = true", "name = 'x'"):
        with pytest.raises(UsageError, match="'target_fmr' is required, a false match rate strictly between 0 and 1"):
            parse_policy(bad, "x.toml")
    with pytest.raises(UsageError, match=r"\[floor\] unknown metric\(s\) acuracy"):
        parse_policy("target_fmr = 0.001\n[floor]\nacuracy = 0.9", "x.toml")
    with pytest.raises(InputError, match="not valid TOML"):
        parse_policy("target_fmr = ", "x.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("target_fmr = -1\n")
    assert main(["report", "--devices", "--policy", str(bad), "--results-dir", str(tmp_path)]) == EXIT_USAGE


def test_needed_sample_size_is_the_rule_of_three():
    assert needed_subject_pairs(1e-3) == 2996  # -ln(0.05) / 1e-3: zero false matches in 2996 puts the bound at 1e-3
    assert needed_subject_pairs(1e-2) == 300


def test_planted_fmr_rise_is_a_failure_by_a_paired_test_with_its_p_and_n(boards):
    _, runs = boards
    found = buyers.findings(runs, load_policy(POLICY))
    black = next(f for f in found if f.board == "rpi (emulated)" and f.variant == "onnx-int8"
                 and f.group == "black" and f.criterion == "FMR target")
    assert black.verdict == FAIL and "x target" in black.value and "impostor pairs" in black.counts
    assert "paired subject bootstrap p =" in black.test and "subjects" in black.counts
    # the gender loss planted on the same board: retention judged by McNemar on the same samples
    gender = next(f for f in found if f.board == "rpi (emulated)" and f.model == "gender-dlib"
                  and f.variant == "onnx-int8" and f.group == "black" and f.criterion.startswith("accuracy retention"))
    assert gender.verdict == FAIL and "exact McNemar" in gender.test and "paired samples" in gender.counts
    # ranked: every failure before every undecided finding before every pass, each by size
    order = [(["fail", "cannot tell at this n", "pass"].index(f.verdict), -f.size) for f in found]
    assert order == sorted(order)
    assert {FAIL, UNSURE} <= {f.verdict for f in found}
    slow = next(f for f in found if f.board == "rpi (emulated)" and f.variant == "tflite-int8"
                and f.criterion == "speed" and f.model == "gender-dlib")
    assert slow.verdict == UNSURE and "INVALID (thermal throttling)" in slow.test  # not a fail: not a measurement


def test_page_describes_the_sample_the_systems_and_marks_provenance(boards):
    _, runs = boards
    html = buyers.render(runs, policy=load_policy(POLICY))
    text = page_text(html)
    # data-set card from the run and the data set's README: people, images per person, labels, licence
    assert "people 102" in text and "images per person 2.0 (min 2, max 2)" in text
    assert "CC BY 4.0" in text and "Self-reported" in text
    assert "2996 subject pairs" in text  # what a decision at 1e-3 needs, beside what each group has
    # system description: provenance marked, the kernel features "not recorded" when the fingerprint has none
    assert "rpi (emulated)" in text and "jetson (imported)" in text and "cpu (imported)" not in text
    assert "emulated by qemu-user 8.2.2 (-cpu cortex-a76)" in text and "not recorded" in text
    assert not re.search(r"<td>rpi</td>", html)  # the emulated board is never labelled as a Pi alone
    # checksum mismatch between boards, as bench compare says it
    assert "model sha256 differs" in text
    # every blank says why
    assert "unavailable: no power rail on this target" in text
    # the vendor cut-off table: formats apart, counts and intervals, what 0.80/0.95/0.99 are
    assert "onnx-int8" in text and "tflite-int8" in text
    assert "cosine similarities of THIS model's embeddings" in text and "tuned on fp32 for FMR 0.001" in text
    assert re.search(r"FMR [\d.e-]+\*? \(\d+/\d+\) \[", text)
    assert "Retention: a group's success rate" in text
    assert "<script" not in html.lower()


def test_kernel_features_are_read_when_the_fingerprint_has_them(boards):
    _, runs = boards
    env = dict(runs[0].doc["environment"])
    env["kernel_path"] = {"int8": "x86-avx2-vpmaddubsw", "int8_label": "AVX2 vpmaddubsw (may saturate)",
                          "features": {"avx2": True, "fma": True, "avx512_vnni": False, "<b>": "yes"}}
    assert buyers._kernel(env) == "int8 path AVX2 vpmaddubsw (may saturate); features: avx2, fma"
    assert buyers._kernel({}) == "not recorded"


def _cvd_distance(a: str, b: str, cvd: str) -> float:
    from colorspacious import cspace_convert

    rgb = np.array([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] for c in (a, b)])
    sim = np.clip(cspace_convert(rgb, {"name": "sRGB1+CVD", "cvd_type": cvd, "severity": 100}, "sRGB1"), 0, 1)
    u = cspace_convert(sim, "sRGB1", "CAM02-UCS")
    return float(np.linalg.norm(u[0] - u[1]))


CVD = ("deuteranomaly", "protanomaly", "tritanomaly")
MIN_DELTA_E = 10.0  # CAM02-UCS; about 1 is a just-noticeable difference, lines need far more at a glance


def _series(svg: str) -> set[tuple[str, str]]:
    """(stroke colour, dash pattern) of every coloured line in a matplotlib SVG (greys: axes and grid)."""
    out = set()
    for style in re.findall(r'style="([^"]*stroke: #[0-9a-f]{6}[^"]*)"', svg):
        colour = re.search(r"stroke: (#[0-9a-f]{6})", style).group(1)
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        if max(r, g, b) - min(r, g, b) < 16:
            continue
        dash = re.search(r"stroke-dasharray: ([^;]+)", style)
        out.add((colour, dash.group(1) if dash else "solid"))
    return out


def test_chart_colours_pass_a_colour_vision_deficiency_distance_check(boards):
    """Every chart of the page: lines drawn with the same dash must differ by at least MIN_DELTA_E under simulated
    deuteranomaly, protanomaly and tritanomaly (Machado et al. 2009, severity 100, via colorspacious)."""
    _, runs = boards
    html = buyers.render(runs)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 2 + 2 * 3  # two Pareto charts; DET and FMR-threshold facets per board
    checked = 0
    for svg in svgs:
        series = _series(svg)
        assert {c for c, _ in series} <= {c.lower() for c in charts.COLORS}, "a colour outside the palette"
        for (c1, d1), (c2, d2) in itertools.combinations(series, 2):
            if d1 == d2 and c1 != c2:
                for cvd in CVD:
                    assert _cvd_distance(c1, c2, cvd) >= MIN_DELTA_E, (c1, c2, cvd)
                checked += 1
    assert checked > 0
    assert len(set(charts.SERIES_STYLES)) == len(charts.SERIES_STYLES) == 32  # (colour, dash) never repeats
    # control: matplotlib's default tab10, the page's old palette, fails the same check
    tab10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    assert min(_cvd_distance(a, b, cvd) for a, b in itertools.combinations(tab10, 2) for cvd in CVD) < MIN_DELTA_E


def test_camera_curves_on_the_buyers_page(tmp_path, boards):
    """A capture-condition sweep among the runs gives the buyer's page the camera section's curves (the rows of
    harness/report/camera.py, as errors on a log axis, one panel per precision); without one, no section."""
    from helpers_results import labels, make_run

    from harness.camera.conditions import parse
    from harness.report import camera

    black = (labels()["ethnicity"] == "black").to_numpy()
    wrong = lambda k: ~(black & (np.cumsum(black) <= k))  # noqa: E731 - the first k Black faces wrong
    runs = [make_run(tmp_path, variants=("onnx-fp32", "onnx-int8"), model_sha="c" * 64,
                     condition=parse(f"exposure:{lv}")[0].to_dict(),
                     outcomes={"onnx-fp32": wrong(k), "onnx-int8": wrong(2 * k)}) for lv, k in ((0, 0), (-4, 6))]
    (sweep, (block,), _), = camera.camera_report(runs).sweeps
    name, panels = camera.error_panels(sweep, block, "accuracy")
    assert name == "error rate (1 - accuracy)" and [p for p, _ in panels] == ["onnx-fp32", "onnx-int8"]
    acc = {(r["variant"], r["group"], r["level"]): r for r in block.curves}
    g, _x, err, lo, hi = next(s for s in panels[1][1] if s[0] == "black")
    a = acc[("onnx-int8", "black", -4)]
    assert err[1] == pytest.approx(1 - a["value"]) and err[1] == pytest.approx(12 / a["n"])
    assert lo[1] == pytest.approx(1 - a["ci_hi"]) and hi[1] == pytest.approx(1 - a["ci_lo"])
    page = buyers.render(runs)
    assert "<h2 id=camera>The camera: each group under capture conditions</h2>" in page
    section = page.split("<h2 id=camera>")[1].split("<h2 ")[0]
    assert section.count("<svg") == 1 and "error rate (1 - accuracy)" in section
    assert all(f">{t}<" in section for t in ("0.001", "0.01", "0.1", "1"))  # decade ticks of the log axis
    assert "#E69F00" in section.upper() or "#e69f00" in section  # Okabe-Ito
    assert "id=camera" not in buyers.render(boards[1])
