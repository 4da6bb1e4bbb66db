"""Render the HTML report in a real headless browser (Debian chromium): it must render its sections and log no
page errors. Skips with a reason where /usr/bin/chromium is absent (CI installs it: apt-get install -y chromium)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the shared run builder
from helpers_results import make_run  # noqa: E402

from harness.report.html import SECTIONS, render_html  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<script>alert(1)</script>"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium not installed (apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def page_errors(log: str) -> list[str]:
    """Console lines the page produced (chromium logs them as 'INFO:CONSOLE:<line>] "<message>"')."""
    return [ln for ln in log.splitlines() if re.search(r"Uncaught|console error|:CONSOLE[:(]|Refused to", ln)]


def test_error_detector_catches_a_broken_page(tmp_path):
    """Control: the same log check flags a page that throws, so a silent pass above means a clean page."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>undefinedFn();</script></body></html>')
    assert any("Uncaught ReferenceError" in ln for ln in page_errors(chromium(tmp_path, "--dump-dom", bad.as_uri()).stderr))


def test_report_renders_in_chromium(tmp_path):
    run = make_run(tmp_path / "results", models=("gender-dlib", "mobilefacenet"), rename_groups={"black": EVIL},
                   drop={"onnx-int8": {"white": 0.1}}, fmr_boost={"onnx-int8": 0.01})
    page = tmp_path / "report.html"
    page.write_text(render_html([run]), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in dom.stdout, heading
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout  # shown as text, never parsed as an element
    assert "<script" not in dom.stdout.lower()
    assert dom.stdout.count("<svg") >= 5
    assert page_errors(dom.stderr) == []
    shot = tmp_path / "report.png"
    res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert res.returncode == 0 and shot.stat().st_size > 20_000  # a blank page PNG is a few kB


def _tables(html_text: str) -> list[list[list[str]]]:
    """Every table of a page as rows of cell texts (header row first), via the standard library's parser."""
    from html.parser import HTMLParser

    class P(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.tables[-1][-1].append(" ".join("".join(self.cell).split()))
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    p = P()
    p.feed(html_text)
    return p.tables


def _print_problems(tmp_path: Path, html_text: str, name: str) -> tuple[list[str], list[str]]:
    """Print a page to PDF with Chromium: (text placed beyond a page's right edge, words of a table's header or
    last column that are not in the PDF's text at all)."""
    import unicodedata

    import pypdf

    page = tmp_path / f"{name}.html"
    page.write_text(html_text, encoding="utf-8")
    pdf = tmp_path / f"{name}.pdf"
    res = chromium(tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    assert res.returncode == 0 and pdf.stat().st_size > 10_000, res.stderr[-2000:]
    text, beyond = [], []
    for pg in pypdf.PdfReader(str(pdf)).pages:
        width = float(pg.mediabox.width)

        def visit(t, cm, tm, _font, _size, width=width):
            x = cm[0] * tm[4] + cm[2] * tm[5] + cm[4]
            if t.strip() and x > width:
                beyond.append(t)

        text.append(pg.extract_text(visitor_text=visit))
    flat = unicodedata.normalize("NFKC", " ".join(text))  # the PDF's "ﬁ"/"ﬂ" ligatures back to letters
    words, joined = set(flat.split()), "".join(flat.split())
    missing = []
    for table in _tables(html_text):
        header, body = table[0], table[1:4]
        for cell in header + [row[-1] for row in body if row]:
            missing += [w for w in cell.split() if len(w) >= 4 and w not in words and w not in joined]
    return beyond, missing


def test_buyers_page_prints_with_no_table_column_clipped(tmp_path, monkeypatch):
    """The buyer's page printed to PDF by Chromium: every word of every table's header and of its last column
    is in the PDF's text, and no text is placed beyond the page's right edge (a clipped column would be).
    Control: the same page with the old styles (tables in scroll boxes, no print rules) fails the check."""
    pytest.importorskip("pypdf", reason="pypdf (the dev extra) reads the printed PDF")
    from harness.report import buyers

    root = tmp_path / "results"
    models, variants = ("gender-dlib", "mobilefacenet"), ("onnx-fp32", "onnx-int8", "tflite-int8")
    runs = [make_run(root, target="cpu", models=models, variants=variants, seed=1),
            make_run(root, target="rpi", models=models, variants=variants, seed=2, fmr_boost={"onnx-int8": 0.3},
                     invalid={"tflite-int8": ["thermal throttling above 80 C for 12 s of the 30 s window"]})]
    html_text = buyers.render(runs)
    assert len(_tables(html_text)) >= 10
    assert _print_problems(tmp_path, html_text, "buyers") == ([], [])
    monkeypatch.setattr(buyers, "_MORE_CSS", ".verdict li{margin:.25em 0}.muted{color:#666;font-size:12px}")
    beyond, missing = _print_problems(tmp_path, buyers.render(runs), "old")
    assert beyond or missing  # the check sees a clipped column


def test_identification_section_renders_in_chromium(tmp_path):
    """The Identification (1:N) section of a scored watchlist run whose probe groups are markup: rendered by
    Chromium with no page errors, the names shown as text, and its tables as rendered hold every rate cell."""
    from helpers_watchlist import scored_run

    from harness.report.identification import cell

    run = scored_run(tmp_path / "results", groups=(EVIL, "b"))
    page = tmp_path / "ident.html"
    page.write_text(render_html([run]), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<h2>Identification (1:N)</h2>" in dom.stdout and page_errors(dom.stderr) == []
    assert "<script" not in dom.stdout.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout
    start = dom.stdout.index("<h2>Identification (1:N)</h2>")
    section = dom.stdout[start:dom.stdout.index("<h2>", start + 10)]
    cells = {c for table in _tables(section) for row in table for c in row}
    sec = run.entry("mobilefacenet--onnx-int8")["metrics"]["identification"]["syn"]
    for config in ("own_gallery", "reference_gallery"):
        assert {cell(r) for r in sec[config]["rates"]} <= cells
    assert EVIL in cells  # the group name as the reader sees it
    assert section.count("<svg") == 4


def test_buyers_page_with_a_watchlist_prints_with_no_table_column_clipped(tmp_path):
    """The buyer's page with its "Identification (1:N)" section filled (a scored watchlist run whose entries were
    timed at two gallery sizes, judged against examples/watchlist.toml, beside a board with no watchlist): printed
    by Chromium, no table column is clipped and the section's three tables are there."""
    pytest.importorskip("pypdf", reason="pypdf (the dev extra) reads the printed PDF")
    from helpers_watchlist import scored_run, search_record

    from harness.report import buyers
    from harness.report.procurement import load_policy

    run = scored_run(tmp_path / "results", groups=(EVIL, "b"))
    for x in run.entries:
        x["speed"] = {"single_stream": {"p50_ms": 3.0}, "search": {"syn": search_record((22, 0.02, "VALID"),
                                                                                        (220, 0.1, "INVALID"))}}
    other = make_run(tmp_path / "results", target="rpi", models=("gender-dlib",), variants=("onnx-fp32",), seed=2)
    html_text = buyers.render([run, other], policy=load_policy("examples/watchlist.toml"))
    section = html_text[html_text.index("<h2 id=identification>"):html_text.index("<h2 id=pareto>")]
    assert len(_tables(section)) == 3 and len(_tables(section)[0][0]) == 13  # summary, per group, candidates
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section and "<script" not in section
    assert _print_problems(tmp_path, html_text, "buyers-1n") == ([], [])
