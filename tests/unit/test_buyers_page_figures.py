"""The buyer's page says the same after its speed-up (issue 22): every table row, verdict and finding of the page
built on a fixed fixture (the planted boards of test_report_buyers.py) is compared with the figures the page
printed before the change (tests/fixtures/buyers_page/figures.txt), and every chart is drawn from the same series.

Text and counts must match exactly; a rate or threshold may differ by at most one unit in its last printed digit, since the fixture's
cosine scores come from a float32 matrix product whose last bit depends on the host's BLAS kernel (AVX2 or
AVX-512), which can move a threshold printed to four decimals across a rounding boundary. Run ids and creation
times are replaced by their board's index. Regenerate (only when the page is meant to change):
BENCH_WRITE_FIGURES=1 python -m pytest tests/unit/test_buyers_page_figures.py
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest

from harness.report import buyers, charts
from harness.report.procurement import load_policy
from helpers_results import planted_boards

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "buyers_page" / "figures.txt"
POLICY = Path(__file__).resolve().parents[2] / "examples" / "procurement.toml"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:e[-+]?\d+)?")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page and its charts' series for three boards with planted effects (helpers_results.planted_boards)."""
    runs = planted_boards(tmp_path_factory.mktemp("boards"))
    drawn: list[str] = []
    mp = pytest.MonkeyPatch()
    for name in ("det_facets", "fmr_threshold_facets", "pareto_intervals", "trend_lines"):
        original = getattr(charts, name)

        def spy(title, series, *rest, _name=name, _original=original, **kw):
            drawn.append(f"chart {_name}: {title}: " + "; ".join(_series_names(_name, series)))
            return _original(title, series, *rest, **kw)
        mp.setattr(charts, name, spy)
    try:
        html = buyers.render(runs, policy=load_policy(POLICY))
    finally:
        mp.undo()
    names = {r.run_id: f"<run of board {i}>" for i, r in enumerate(runs)}
    names.update({r.doc["created_utc"]: f"<created on board {i}>" for i, r in enumerate(runs)})
    return figures(html, names) + drawn


def _series_names(kind: str, series) -> list[str]:
    if kind == "pareto_intervals":  # (label, p50, p90, p99, error, lo, hi, on the front): numbers are in the tables
        return [f"{p[0]}{' (front)' if p[7] else ''}" for p in series]
    if kind == "trend_lines":
        return [s[0] for s in series]
    return [f"{panel} [{', '.join(c[0] for c in curves)}]" for panel, curves in series]


def figures(html: str, names: dict[str, str]) -> list[str]:
    """The page's headings, table rows (cells joined by ' | ') and list items, in page order, as plain text."""
    body = re.sub(r"<svg.*?</svg>", "", html, flags=re.S)
    out = []
    for m in re.finditer(r"<(h[234]|li|tr)\b[^>]*>(.*?)</\1>", body, flags=re.S):
        tag, inner = m.group(1), m.group(2)
        cells = re.findall(r"<t[hd]\b[^>]*>(.*?)</t[hd]>", inner, flags=re.S) if tag == "tr" else [inner]
        text = " | ".join(" ".join(unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells)
        for old, new in names.items():
            text = text.replace(old, new)
        out.append(f"{tag}: {text}")
    return out


def _same(old: str, new: str) -> bool:
    """Equal text, every count equal, and every other number equal to one unit in its last printed digit."""
    a, b = NUMBER.split(old), NUMBER.split(new)
    if a != b:
        return False
    for x, y in zip(NUMBER.findall(old), NUMBER.findall(new)):
        if x == y:
            continue
        if not re.search(r"[.e]", x + y):  # a count: exact
            return False
        dx, dy = Decimal(x), Decimal(y)
        unit = Decimal(1).scaleb(min(dx.as_tuple().exponent, dy.as_tuple().exponent))
        if abs(dx - dy) > unit:
            return False
    return True


def test_page_figures_are_the_ones_it_printed_before_the_speed_up(page):
    if os.environ.get("BENCH_WRITE_FIGURES"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text("\n".join(page) + "\n", encoding="utf-8")
        pytest.skip(f"wrote {GOLDEN}")
    want = GOLDEN.read_text(encoding="utf-8").splitlines()
    assert len(page) == len(want), f"{len(page)} lines, {len(want)} expected"
    bad = [(i, w, g) for i, (w, g) in enumerate(zip(want, page)) if not _same(w, g)]
    assert not bad, "\n".join(f"line {i + 1}:\n  was {w}\n  now {g}" for i, w, g in bad[:5])
    assert sum(x.startswith("chart ") for x in page) >= 2 + 2 * 3  # two Pareto charts, DET + FMR facets per board


def test_the_comparison_tolerates_only_the_last_digit():
    assert _same("FMR 0.0123 (3/244) [0.00402, 0.0311]", "FMR 0.0124 (3/244) [0.00402, 0.0311]")
    assert not _same("FMR 0.0123 (3/244)", "FMR 0.0125 (3/244)")
    assert not _same("FMR 0.0123 (3/244)", "FMR 0.0123 (4/244)")
    assert not _same("pass", "fail")
    assert _same("threshold 0.5000", "threshold 0.4999") and not _same("1.0e-3", "2.0e-3")
