"""Compact rich tables for the terminal: one line per entry after `bench run`, and one entry's groups."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from harness.report.summary import (
    SENSITIVITY_HEADERS, fmt, higher_is_better, pipeline_sensitivity, rate_rows, reference_rows, retention_value,
    sensitivity_cells, sensitivity_tables, summarize,
)
from harness.results.store import Run

_STATUS_STYLE = {"ok": "green", "failed": "red", "skipped": "yellow", "unavailable": "yellow"}


def summary_table(run: Run) -> Table:
    """Per model x variant: status, p90 latency, headline metric, worst group, worst-group retention, validity."""
    table = Table(title=f"run {run.run_id} on {run.target} ({run.doc['status']})", title_justify="left")
    for col, justify in (("entry", "left"), ("status", "left"), ("p90 ms", "right"), ("ips", "right"),
                         ("metric", "left"), ("overall", "right"), ("worst group", "left"), ("worst", "right"),
                         ("retention", "right"), ("validity", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for e in run.entries:
        s = summarize(run, e)
        status = Text(s.status, style=_STATUS_STYLE.get(s.status, ""))
        if s.reason:
            status.append(f" ({s.reason})", style="dim")
        validity = Text(s.validity, style="green" if s.validity == "VALID" else "red" if s.validity == "INVALID"
                        else "dim")
        if s.validity_reasons:
            validity.append(": " + "; ".join(s.validity_reasons), style="dim")
        # Text(...) everywhere: group names come from data and must not be parsed as rich markup.
        # The metric cell names the dataset, so the worst group can drop its "group_by=" prefix and fit.
        metric = f"{s.metric} ({s.dataset})" if s.metric and s.dataset else (s.metric or "-")
        worst = f"{s.worst_group.split('=', 1)[-1]} (n={s.worst_n})" if s.worst_group else "-"
        table.add_row(Text(s.entry), status, fmt(s.p90_ms, ".2f"), fmt(s.throughput_ips, ".1f"),
                      Text(metric), fmt(s.overall), Text(worst), fmt(s.worst_value),
                      fmt(s.worst_retention, ".4f"), validity)
    return table


def group_table(run: Run, entry_id: str, metric: str | None = None) -> Table:
    """Every rate row of one entry's metric: group, n, value with its CI, small-n flag, retention."""
    e = run.entry(entry_id)
    s = summarize(run, e)
    metric = metric or s.metric
    retention = {(r["group_by"], r["group"]): retention_value(r) for r in reference_rows(e, "retention")
                 if r.get("metric", metric) == metric}
    table = Table(title=f"{entry_id}: {metric} by group ({'higher' if higher_is_better(metric or '') else 'lower'}"
                        " is better)", title_justify="left")
    for col in ("group by", "group", "n", metric or "value", "95% CI", "MDD", "retention", ""):
        table.add_column(col, justify="right" if col in ("n", metric, "MDD", "retention") else "left")
    rows: list[dict[str, Any]] = rate_rows(e, metric)
    for r in rows:
        ci = f"[{fmt(r.get('ci_lo'))}, {fmt(r.get('ci_hi'))}]"
        # MDD: the smallest gap to the other groups these counts could detect (alpha 0.05, power 0.8).
        table.add_row(Text(r["group_by"]), Text(r["group"]), str(r["n"]), fmt(r.get("value")), ci,
                      fmt(r.get("mdd"), ".3f"), fmt(retention.get((r["group_by"], r["group"])), ".4f"),
                      Text("small n", style="yellow") if r.get("small") else "")
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
