"""`bench trend` on a console: one table per precision, at 80 columns nothing cut, change points as notes."""

from __future__ import annotations

from rich.console import Console

from harness.commands.trend import SPARK_POINTS, print_trends
from harness.report.trend import Series, Step


def _series(target: str, entry: str, values: list[float], steps: list[Step] | None = None) -> Series:
    n = len(values)
    return Series(target, entry, [f"20260101T{i:06d}Z-{target}-abc" for i in range(n)],
                  [f"2026-01-{1 + i % 28:02d}T00:00:00Z" for i in range(n)], values, steps or [])


def test_trend_tables_are_per_precision_and_fit_80_columns():
    step = Step(21, "20260101T000021Z-jetson-abc", 0.00123, 0.00133)
    series = [
        _series("cpu", "gender-dlib--onnx-int8", [2.0 + 0.01 * i for i in range(30)]),
        _series("cpu", "gender-dlib--onnx-fp32", [2.0 + 0.01 * i for i in range(30)]),
        _series("cpu", "gender-dlib--onnx-fp16", [2.0 + 0.01 * i for i in range(30)]),
        _series("jetson", "mobilefacenet--onnx-int8", [0.00123 + 0.0001 * (i > 20) for i in range(30)], [step]),
        _series("coral", "mobilefacenet--tflite-int8", [5.0, 5.1, 5.0]),
        _series("rpi", "a-custom-model-whose-name-is-longer-than-a-column--onnx-int8", [1.0, 1.1, 1.0]),
    ]
    console = Console(width=80, record=True)
    print_trends(console, series, "p90_ms over 30 run(s)")
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text  # a name folds onto the next line, it is never cut
    # one table per precision, onnx-int8 and tflite-int8 apart, fp32 first in each format; each model on its board
    heads = [line.strip() for line in lines if line.startswith("precision ")]
    assert heads == ["precision onnx-fp32", "precision onnx-fp16", "precision onnx-int8", "precision tflite-int8"]
    int8 = text.split("precision onnx-int8")[1].split("precision tflite-int8")[0]
    assert "jetson" in int8 and "mobilefacenet" in int8 and "coral" not in int8
    name = "a-custom-model-whose-name-is-longer-than-a-column"
    assert all(part in int8 for part in name.split("-"))  # folded over lines, every part of it there
    # the change point: flagged in its row, described below the table with its run, levels and change
    assert "[1]" in int8 and "from run 20260101T000021Z-jetson-abc: 0.00123 -> 0.00133 (+8.1%)" in " ".join(
        int8.split())
    assert "[1]" not in text.split("precision onnx-int8")[0]  # no flag where there is no step
    assert f"last {SPARK_POINTS}" in text


def test_fmr_trend_per_group_follows_each_groups_rate_at_the_fp32_threshold(tmp_path):
    from helpers_results import make_run

    from harness.report.summary import verification_group_rows
    from harness.report.trend import group_values, trends

    runs = [make_run(tmp_path, models=("mobilefacenet",), variants=("onnx-fp32", "onnx-int8"), seed=night,
                     fmr_boost={"onnx-int8": 0.3 if night >= 2 else 0.0}) for night in range(4)]
    series = trends(runs, "fmr_per_group")
    int8 = {s.group: s for s in series if s.entry == "mobilefacenet--onnx-int8"}
    assert "black" in int8 and None not in int8 and len(int8) >= 3  # one series per group, never the overall
    for night, run in enumerate(runs):  # each point is the group's FMR row at the fp32-tuned threshold
        _, by = verification_group_rows(run, run.entry("mobilefacenet--onnx-int8"))
        assert int8["black"].values[night] == by["black"]["fmr"]["value"]
        assert int8["black"].run_ids[night] == run.run_id
    assert min(int8["black"].values[2:]) > max(int8["black"].values[:2])  # the planted rise, in the black group
    assert group_values(runs[0], runs[0].entry("mobilefacenet--onnx-fp32"))  # fp32 has its groups too
    assert int8["black"].to_dict()["group"] == "black"
    console = Console(width=80, record=True)
    print_trends(console, series, "fmr_per_group over 4 run(s)")
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert " group " in text.split("precision onnx-int8")[1] and "black" in text.split("precision onnx-int8")[1]
