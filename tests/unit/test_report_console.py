"""Console tables: the summary shows the headline figures; data strings are not parsed as rich markup."""

from __future__ import annotations

from rich.console import Console

from harness.commands.runs import print_runs
from harness.report.console import group_table, summary_table
from harness.report.summary import fmt, fmt_rate, summarize, verification_markdown, worst_retention
from harness.results.index import RunIndex
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
    row = next(line for line in text.splitlines() if " ".join(line.split()).startswith("gender-dlib onnx int8"))
    assert f"{s.p90_ms:.2f}" in row
    # the planted 30-point loss is the worst group (the table drops the "group_by=" prefix: the metric cell names it)
    assert "white" in s.worst_group and s.worst_group.split("=", 1)[1] in text
    assert "INVALID [1]" in row and "[1] gender-dlib onnx int8: INVALID: clock drift" in text
    assert f"{s.worst_retention:.4f}" in row
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


def verification_rows(dataset="london-frl", thr=0.5116):
    """Rate rows as harness.metrics.per_group_error_rates writes them (subject-weighted, subject intervals)."""
    tuned = {"threshold": thr, "threshold_kind": "tuned", "target_fmr": 0.001, "dataset": dataset}
    base = {"group_by": "ethnicity*gender", "small": False, "unit": "subject", "ci_method": "subject_bootstrap"}
    return [
        {**base, **tuned, "metric": "fnmr", "group": "all", "n": 102, "k": 5, "value": 0.0490, "ci_lo": 0.0161,
         "ci_hi": 0.0882, "n_subjects": 102},
        {**base, **tuned, "metric": "fnmr", "group": "black*female", "n": 0, "k": 0, "value": None, "ci_lo": None,
         "ci_hi": None, "status": "not_computable", "reason": "no genuine pairs", "n_subjects": 5},
        {**base, **tuned, "metric": "fmr", "group": "all", "n": 20604, "k": 29, "value": 0.00141, "ci_lo": 0.000245,
         "ci_hi": 0.00328, "n_subjects": 102},
        {**base, **tuned, "metric": "fmr", "group": "black*female", "n": 40, "k": 5, "value": 0.125, "ci_lo": 0.0,
         "ci_hi": 0.5, "n_subjects": 5},
        # a fixed cut-off row: context, never in the headline table
        {**base, **tuned, "threshold": 0.8, "threshold_kind": "fixed", "metric": "fmr", "group": "all", "n": 20604,
         "k": 0, "value": 0.0, "ci_lo": 0.0, "ci_hi": 0.029, "n_subjects": 102},
    ]


def test_fmr_shows_enough_digits_to_see_the_threshold_transfer():
    assert fmt(0.001) == fmt(0.00141) == "0.001"  # why three decimals were not enough
    assert (fmt_rate(0.001), fmt_rate(0.00141), fmt_rate(0.125), fmt_rate(0.0)) == ("0.00100", "0.00141", "0.125", "0")


def test_verification_table_puts_fnmr_beside_fmr_and_names_the_dataset(tmp_path):
    run = make_run(tmp_path, models=("mobilefacenet",))
    entry = run.entry("mobilefacenet--onnx-int8")
    entry["metrics"]["rates"] = verification_rows()
    text = render(group_table(run, "mobilefacenet--onnx-int8"))
    assert "on london-frl at the fp32-tuned threshold 0.5116" in text
    all_line = next(line for line in text.splitlines() if "│ all " in line)
    # one line: FMR 0.00141 with its subject interval and raw counts, then FNMR 0.0490 with its own
    assert all(x in all_line for x in ("0.00141", "[0.000245, 0.00328]", "29/20604", "0.0490", "[0.0161, 0.0882]"))
    assert all_line.index("0.00141") < all_line.index("0.0490")
    bf = next(line for line in text.splitlines() if "black*female" in line)
    assert "[0, 0.500]" in bf and "not computable: no genuine pairs" in bf
    assert "0.800" not in text  # the fixed cut-off row stays out
    s = summarize(run, entry)
    assert (s.metric, s.dataset, s.overall, s.fnmr) == ("fmr", "london-frl", 0.00141, 0.0490)
    summary = render(summary_table(run))
    assert "0.00141" in summary and "0.0490" in summary
    md = "\n".join(verification_markdown(entry, "mobilefacenet--onnx-int8"))
    assert "on london-frl at threshold 0.5116" in md
    assert "| all | 102 | 0.00141 | [0.000245, 0.00328] | 29/20604 |" in md
    assert "not computable: no genuine pairs" in md


def test_runs_prints_whole_run_ids_in_a_narrow_terminal(tmp_path):
    runs = [make_run(tmp_path / "r", target=t) for t in ("cpu", "rpi")]
    rows = RunIndex(tmp_path / "r").query()
    for width in (60, 80):
        console = Console(record=True, width=width, file=open("/dev/null", "w"))
        print_runs(console, rows, "2 run(s)")
        lines = console.export_text().splitlines()
        assert all(run.run_id in lines for run in runs)  # each id whole, on its own line
        assert max(len(line) for line in lines) <= width
    console = Console(record=True, width=200, file=open("/dev/null", "w"))
    print_runs(console, rows, "2 run(s)")
    text = console.export_text()
    assert "run id" in text and all(run.run_id in text for run in runs)  # wide enough: the table


def render_at(renderable, width: int) -> str:
    console = Console(record=True, width=width, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


LONG_REASON = ("fidelity check failed: cosine 0.62 < 0.99 on 10 of 10 calibration images; the int8 build used the "
               "dynamic recipe on an AVX2-only host")


def test_summary_gives_model_format_precision_columns_uncut_at_80_and_120(tmp_path):
    variants = ("onnx-fp32", "onnx-fp16", "onnx-int8", "tflite-fp32", "tflite-fp16", "tflite-int8")
    run = make_run(tmp_path, models=("mobilefacenet", "gender-dlib"), variants=variants,
                   invalid={"tflite-fp16": ["clock drift " * 12]})
    run.doc["entries"][2].update(status="failed", reason=LONG_REASON)
    for width in (80, 120):
        text = render_at(summary_table(run), width)
        lines = text.splitlines()
        assert "…" not in text and max(len(line.rstrip()) for line in lines) <= width
        for model in ("mobilefacenet", "gender-dlib"):
            for variant in variants:
                fmt_, prec = variant.split("-")
                # every table repeats the identity columns, each entry on one line of its own: 12 rows apart
                pattern = f"{model} {fmt_} {prec}"
                assert any(" ".join(line.split()).startswith(pattern) for line in lines), (width, pattern)
        # the long reason sits under the table, whole, behind its note number, not wrapped through a row
        failed = next(line for line in lines if " ".join(line.split()).startswith("mobilefacenet onnx int8"))
        assert "[1]" in failed and "cosine" not in failed
        notes = " ".join(text[text.index("notes:"):].split())
        assert f"[1] mobilefacenet onnx int8: {LONG_REASON}" in notes
        assert "[2] mobilefacenet tflite fp16: INVALID: clock drift" in notes
    # at 120 columns every column still appears: the ones that do not fit go to a continuation table
    wide = render_at(summary_table(run), 120)
    assert all(h in wide for h in ("p90 ms", "overall", "fnmr", "worst group", "x target", "retention", "validity"))


def test_summary_shows_worst_group_multiple_of_target_and_subjects_and_pairs(tmp_path):
    run = make_run(tmp_path, models=("mobilefacenet",), variants=("onnx-fp32", "onnx-int8"),
                   fmr_boost={"onnx-int8": 0.3})
    s = summarize(run, run.entry("mobilefacenet--onnx-int8"))
    rows = [r for r in run.entry("mobilefacenet--onnx-int8")["metrics"]["rates"]
            if r["metric"] == "fmr" and r.get("threshold_kind") == "tuned"]
    target = rows[0]["target_fmr"]
    worst = next(r for r in rows if f"{r['group_by']}={r['group']}" == s.worst_group)
    assert s.worst_multiple == worst["value"] / target and s.worst_multiple > 10  # the planted rise
    assert s.worst_n_text == f"{worst['n_subjects']} subjects, {worst['n']} pairs"
    text = " ".join(render_at(summary_table(run), 200).split())
    assert f"{s.worst_multiple:.1f}" in text and s.worst_n_text in text


def test_worst_group_is_tied_within_intervals_when_the_runner_up_overlaps():
    from harness.report.summary import tied_with_worst, worst_group

    def row(group, value, lo, hi, n=100):
        return {"metric": "fmr", "group_by": "ethnicity*gender", "group": group, "value": value, "ci_lo": lo,
                "ci_hi": hi, "n": n}

    # the case: 1.452% vs 1.441%, intervals overlapping; a third group clearly apart
    rows = [row("all", 0.01, 0.009, 0.011), row("black*female", 0.01452, 0.012, 0.017),
            row("asian*female", 0.01441, 0.0119, 0.0168), row("white*male", 0.004, 0.003, 0.005),
            row("tiny", 0.5, 0.0, 1.0, n=3)]
    worst = worst_group(rows, "fmr")
    assert worst["group"] == "black*female"
    assert [r["group"] for r in tied_with_worst(rows, worst)] == ["asian*female"]
    apart = [r if r["group"] != "asian*female" else row("asian*female", 0.0110, 0.0100, 0.0118) for r in rows]
    assert tied_with_worst(apart, worst_group(apart, "fmr")) == []


FLAGGED = {"against": "onnx-fp32", "n": 507, "decision_agreement": 0.9487, "within_tolerance": False,
           "disagreement": {"k": 26, "n": 507, "rate": 26 / 507, "ci_hi": 0.0703, "max": 0.05},
           "reason": "26 of 507 faces disagree (5.1%, 95% upper bound 7.0% > 5%)",
           "host": {"arch": "x86_64", "model": "AMD EPYC", "vnni": False,
                    "features": {"avx2": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False}}}


def test_a_variant_built_outside_tolerance_is_flagged_with_its_figures(tmp_path):
    from harness.report.console import fidelity_flags

    run = make_run(tmp_path, fidelity={"onnx-int8": FLAGGED, "onnx-fp32": {"against": None, "within_tolerance": True}})
    text = render(summary_table(run))
    assert "flagged" in text and text.count("flagged") == 1
    lines = [line.plain for line in fidelity_flags(run)]
    assert lines == ["gender-dlib--onnx-int8 flagged: 26 of 507 faces disagree (5.1%, 95% upper bound 7.0% > 5%) "
                     "(measured on x86_64, avx2, no VNNI)"]
    assert summarize(run, run.entry("gender-dlib--onnx-fp32")).fidelity_flag is None
