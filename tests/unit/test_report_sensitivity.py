"""The pipeline-sensitivity section in the console summary, the Markdown and the HTML report: one table per model
and dataset, group names escaped, and an honest note when the run could not measure it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harness.metrics.pipeline_sensitivity import pipeline_sensitivity
from harness.report.console import sensitivity_section
from harness.report.html import render_html, render_markdown
from harness.results.schema import schema_errors
from harness.results.store import Run
from tests.unit.test_metrics_pipeline_sensitivity import _frame

EVIL = "<script>alert(1)</script>|x"


def _run(section: dict) -> Run:
    doc = {"schema_version": 1, "run_id": "20261127T000000Z-cpu-abcdef", "created_utc": "2026-11-27T00:00:00Z",
           "status": "complete", "target": {"id": "cpu"}, "entries": [], "pipeline_sensitivity": section}
    return Run(Path("/nonexistent"), doc)


def _ok_run() -> Run:
    df = _frame()
    df.loc[df["race"] == "B", "race"] = EVIL
    rows = [dict(r, dataset="fairface-sample") for r in pipeline_sensitivity(df, group_by=["race"], seed=0, n_boot=50)]
    return _run({"status": "ok", "pipeline": "harness",
                 "upstream": {"detector": "hog", "chip": {"size": 32, "padding": 0.2},
                              "files": {"shape_predictor_5": {"file": "shape_predictor_5_face_landmarks.dat",
                                                              "sha256": "c" * 64}}},
                 "models": {"gender-dlib": {"status": "ok", "variant": "onnx-fp32", "samples": "pipeline/x.jsonl",
                                            "rows": rows}}})


def _console_text(run: Run) -> str:
    console = Console(record=True, width=200)
    for item in sensitivity_section(run):
        console.print(item)
    return console.export_text()


def test_rows_are_schema_valid():
    assert schema_errors(_ok_run().doc) == []


def test_console_table_per_model_and_dataset():
    text = _console_text(_ok_run())
    assert "gender-dlib on fairface-sample: pipeline sensitivity" in text
    assert "A" in text and EVIL in text  # printed literally, not parsed as markup
    line = next(x for x in text.splitlines() if "│ race" in x and "│ A " in x)
    assert "0.500" in line and "0.667" in line and "1/2" in line and "+0.167" in line


def test_html_and_markdown_escape_group_names():
    run = _ok_run()
    html = render_html([run])
    assert "Pipeline sensitivity" in html and "<script>alert" not in html and "&lt;script&gt;" in html
    md = render_markdown([run])
    assert "## Pipeline sensitivity" in md and "### gender-dlib on fairface-sample" in md
    assert "&lt;script&gt;" in md and "\\|x" in md


def test_unavailable_is_said_not_hidden():
    run = _run({"status": "unavailable", "reason": "the upstream pipeline needs dlib and "
                "face-recognition-models: pip install -e '.[upstream]'"})
    assert ".[upstream]" in _console_text(run)
    assert ".[upstream]" in render_markdown([run])
    assert ".[upstream]" in render_html([run])


def test_no_gender_model_prints_nothing():
    assert sensitivity_section(_run({})) == []
    assert sensitivity_section(_run({"status": "not_applicable", "reason": "no dlib-chip (gender) model"})) == []
