"""Compact rich tables for the terminal: one line per entry after `bench run`, and one entry's groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from harness.names import shown

from harness.report.summary import fmt, higher_is_better, rate_rows, reference_rows, retention_value, summarize
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
    """Per model x variant: status, p90 latency, headline metric, worst group, worst-group retention, validity."""
    table = Table(title=user_text(f"run {run.run_id} on {run.target} ({run.doc['status']})"), title_justify="left")
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
        table.add_row(user_text(s.entry), status, fmt(s.p90_ms, ".2f"), fmt(s.throughput_ips, ".1f"),
                      user_text(metric), fmt(s.overall), user_text(worst), fmt(s.worst_value),
                      fmt(s.worst_retention, ".4f"), validity)
    return table


def group_table(run: Run, entry_id: str, metric: str | None = None) -> Table:
    """Every rate row of one entry's metric: group, n, value with its CI, small-n flag, retention."""
    e = run.entry(entry_id)
    s = summarize(run, e)
    metric = metric or s.metric
    retention = {(r["group_by"], r["group"]): retention_value(r) for r in reference_rows(e, "retention")
                 if r.get("metric", metric) == metric}
    table = Table(title=user_text(f"{entry_id}: {metric} by group "
                                  f"({'higher' if higher_is_better(metric or '') else 'lower'} is better)"),
                  title_justify="left")
    for col in ("group by", "group", "n", metric or "value", "95% CI", "MDD", "retention", ""):
        table.add_column(col, justify="right" if col in ("n", metric, "MDD", "retention") else "left")
    rows: list[dict[str, Any]] = rate_rows(e, metric)
    for r in rows:
        ci = f"[{fmt(r.get('ci_lo'))}, {fmt(r.get('ci_hi'))}]"
        # MDD: the smallest gap to the other groups these counts could detect (alpha 0.05, power 0.8).
        table.add_row(user_text(r["group_by"]), user_text(r["group"]), str(r["n"]), fmt(r.get("value")), ci,
                      fmt(r.get("mdd"), ".3f"), fmt(retention.get((r["group_by"], r["group"])), ".4f"),
                      Text("small n", style="yellow") if r.get("small") else "")
    return table
