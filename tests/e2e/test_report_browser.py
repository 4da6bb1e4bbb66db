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
