"""Compact rich tables for the terminal: one line per entry after `bench run`, and one entry's groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.names import shown
from harness.report.summary import (
    SENSITIVITY_HEADERS, fmt, fmt_ci, fmt_rate, fmt_rate_row, higher_is_better, pair_counts, pipeline_sensitivity,
    rate_rows, reference_rows, retention_value, sensitivity_cells, sensitivity_tables, summarize, verification_groups,
)
from harness.results.store import Run

_STATUS_STYLE = {"ok": "green", "failed": "red", "skipped": "yellow", "unavailable": "yellow"}


def user_text(value: Any, style: str = "") -> Text:
    """A user-supplied string (file name, group value, path, id, reason) as rich Text: never parsed as markup
    ("[bold]" and "[/]" print as written), non-UTF-8 bytes and control characters escaped (harness.names.shown)."""
    if isinstance(value, Text):
        return value
    return Text(shown("" if value is None else value), style=style)


def user_table(title: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]], **table_kw: Any) -> Table:
    """A rich Table whose title and every cell are user data (user_text); column names are the harness's own."""
    table = Table(title=user_text(title), **table_kw)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(user_text(cell) for cell in row))
    return table


def summary_table(run: Run) -> Table:
    """Per model x variant: status, p90 latency, headline metric (verification: FMR, with the overall FNMR at the
    same threshold beside it), worst group, worst-group retention, validity. Rates to three significant digits."""
    table = Table(title=user_text(f"run {run.run_id} on {run.target} ({run.doc['status']})"), title_justify="left")
    for col, justify in (("entry", "left"), ("status", "left"), ("p90 ms", "right"), ("ips", "right"),
                         ("metric", "left"), ("overall", "right"), ("fnmr", "right"), ("worst group", "left"),
                         ("worst", "right"),
                         ("retention", "right"), ("validity", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for e in run.entries:
        s = summarize(run, e)
        status = Text(s.status, style=_STATUS_STYLE.get(s.status, ""))
        if s.reason:
            status.append(f" ({s.reason})", style="dim")
        if s.fidelity_flag:
            status.append(" flagged", style="yellow")
        validity = Text(s.validity, style="green" if s.validity == "VALID" else "red" if s.validity == "INVALID"
                        else "dim")
        if s.validity_reasons:
            validity.append(": " + "; ".join(s.validity_reasons), style="dim")
        # Text(...) everywhere: group names come from data and must not be parsed as rich markup.
        # The metric cell names the dataset, so the worst group can drop its "group_by=" prefix and fit.
        metric = f"{s.metric} ({s.dataset})" if s.metric and s.dataset else (s.metric or "-")
        worst = f"{s.worst_group.split('=', 1)[-1]} (n={s.worst_n})" if s.worst_group else "-"
        table.add_row(user_text(s.entry), status, fmt(s.p90_ms, ".2f"), fmt(s.throughput_ips, ".1f"),
                      user_text(metric), fmt_rate(s.overall), fmt_rate(s.fnmr), user_text(worst),
                      fmt_rate(s.worst_value),
                      fmt(s.worst_retention, ".4f"), validity)
    return table


def fidelity_flags(run: Run) -> list[Text]:
    """One line per entry whose variant was built outside fidelity tolerance: its figures and the build host's
    kernel path (harness.models.fidelity); printed under the summary table."""
    return [Text.assemble(user_text(e["entry"]), " ", Text(flag, style="yellow"))
            for e in run.entries if (flag := summarize(run, e).fidelity_flag)]


def group_table(run: Run, entry_id: str, metric: str | None = None) -> Table:
    """Every rate row of one entry's metric: dataset, group, n, value with its CI, small-n flag, retention.
    A verification entry (no metric asked for) gets verification_table: FMR and FNMR side by side."""
    e = run.entry(entry_id)
    s = summarize(run, e)
    if metric is None and e.get("task") == "verification":
        return verification_table(run, entry_id)
    metric = metric or s.metric
    retention = {(r["group_by"], r["group"]): retention_value(r) for r in reference_rows(e, "retention")
                 if r.get("metric", metric) == metric}
    better = "higher" if higher_is_better(metric or "") else "lower"
    table = Table(title=user_text(f"{entry_id}: {metric} by group ({better} is better)"), title_justify="left")
    for col in ("dataset", "group by", "group", "n", metric or "value", "95% CI", "MDD", "retention", ""):
        table.add_column(col, justify="right" if col in ("n", metric, "MDD", "retention") else "left")
    rows: list[dict[str, Any]] = rate_rows(e, metric)
    for r in rows:
        # MDD: the smallest gap to the other groups these counts could detect (alpha 0.05, power 0.8).
        table.add_row(user_text(str(r.get("dataset") or "-")), user_text(r["group_by"]), user_text(r["group"]),
                      str(r["n"]), fmt_rate_row(r), fmt_ci(r), fmt(r.get("mdd"), ".3f"),
                      fmt(retention.get((r["group_by"], r["group"])), ".4f"),
                      Text("small n", style="yellow") if r.get("small") else "")
    return table


def verification_table(run: Run, entry_id: str) -> Table:
    """FMR beside FNMR per group at the operating threshold (fp32-tuned, inherited by every variant): the
    subject-weighted value, its 95% interval (subject bootstrap; one-sided Clopper-Pearson bound at a zero count),
    subjects and the raw errors/pairs. The title names the dataset and threshold (a dataset column is added when
    the entry has several). Rates to three significant digits."""
    groups = verification_groups(run.entry(entry_id))
    datasets = list(dict.fromkeys((v.dataset, v.threshold) for v in groups if v.threshold is not None))
    where = (f" on {datasets[0][0]} at the fp32-tuned threshold {datasets[0][1]:.4f}" if len(datasets) == 1
             else " at each dataset's fp32-tuned threshold")
    by = ", ".join(dict.fromkeys(v.group_by for v in groups))
    table = Table(title=f"{entry_id}: FMR and FNMR by {by}{where} (lower is better; each subject counts once, "
                        "95% CI over subjects)", title_justify="left")
    several = len({v.dataset for v in groups}) > 1
    cols = (["dataset", "threshold"] if several else []) + [
        "group", "subjects", "FMR", "95% CI", "errors/pairs", "FNMR", "95% CI", "errors/pairs", ""]
    for col in cols:
        table.add_column(col, justify="right" if col in ("threshold", "subjects", "FMR", "FNMR") else "left")
    for v in groups:
        small = any(r and r.get("small") for r in (v.fmr, v.fnmr))
        lead = [Text(str(v.dataset or "-")), fmt(v.threshold, ".4f")] if several else []
        table.add_row(*lead, Text(v.group), fmt(v.n_subjects, "d"), fmt_rate_row(v.fmr), fmt_ci(v.fmr or {}),
                      pair_counts(v.fmr), fmt_rate_row(v.fnmr), fmt_ci(v.fnmr or {}), pair_counts(v.fnmr),
                      Text("small n", style="yellow") if small else "")
    return table


def sensitivity_section(run: Run) -> list[Table | Text]:
    """Per model and dataset, per group: gender accuracy from the harness's chips and from the upstream (dlib)
    chips, paired, with the exact McNemar p; a one-line note where the run could not measure it; [] where it does
    not apply (no gender model)."""
    note, rows = pipeline_sensitivity(run)
    out: list[Table | Text] = [Text(note, style="yellow")] if note else []
    for (model, dataset), part in sensitivity_tables(rows).items():
        table = Table(title=Text(f"{model} on {dataset}: pipeline sensitivity (fp32 on h = harness chips, up = "
                                 "upstream dlib chips; b: only h right, c: only up right)"), title_justify="left")
        for col in SENSITIVITY_HEADERS:
            table.add_column(col, justify="left" if col in ("group by", "group") else "right", no_wrap=True)
        for r in part:
            table.add_row(*(Text(c) for c in sensitivity_cells(r)))
        out.append(table)
    return out
