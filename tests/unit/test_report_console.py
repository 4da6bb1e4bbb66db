"""Console tables: the summary shows the headline figures; data strings are not parsed as rich markup."""

from __future__ import annotations

from rich.console import Console

from harness.report.console import group_table, summary_table
from harness.report.summary import worst_retention, summarize
from helpers_results import make_run


def render(table) -> str:
    console = Console(record=True, width=250, file=open("/dev/null", "w"))
    console.print(table)
    return console.export_text()


def test_summary_and_group_tables(tmp_path):
    run = make_run(tmp_path, drop={"onnx-int8": {"white": 0.3}}, rename_groups={"black": "[bold]black[/bold]"},
                   invalid={"onnx-int8": ["clock drift"]})
    text = render(summary_table(run))
    s = summarize(run, run.entry("gender-dlib--onnx-int8"))
    assert "gender-dlib--onnx-int8" in text and f"{s.p90_ms:.2f}" in text
    # the planted 30-point loss is the worst group (the table drops the "group_by=" prefix: the metric cell names it)
    assert "white" in s.worst_group and s.worst_group.split("=", 1)[1] in text
    assert "INVALID: clock drift" in text and f"{s.worst_retention:.4f}" in text
    groups = render(group_table(run, "gender-dlib--onnx-int8"))
    assert "[bold]black[/bold]" in groups  # printed literally
    assert "small n" in groups


def test_fixed_cutoff_rows_do_not_become_the_headline(tmp_path):
    run = make_run(tmp_path, models=("mobilefacenet",))
    rates = run.entry("mobilefacenet--onnx-int8")["metrics"]["rates"]
    assert any(r.get("threshold_kind") == "fixed" and r["value"] == 1.0 for r in rates)  # the decoys exist
    s = summarize(run, run.entry("mobilefacenet--onnx-int8"))
    assert s.metric == "fmr" and s.overall < 0.5 and s.worst_value < 1.0
    # score_run writes verification retention at the fixed cut-offs only: context rows, so no headline retention
    retention = run.entry("mobilefacenet--onnx-int8")["metrics"]["reference"]["retention"]
    assert retention and all(r.get("threshold_kind") == "fixed" for r in retention)
    assert worst_retention(run.entry("mobilefacenet--onnx-int8"), "fnmr") is None
