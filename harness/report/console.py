"""Compact rich tables for the terminal: one line per entry after `bench run`, and one entry's groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from harness.names import shown
from harness.report.summary import (
    SENSITIVITY_HEADERS, fmt, fmt_ci, fmt_rate, fmt_rate_row, higher_is_better, pair_counts, pipeline_sensitivity,
    EntrySummary, rate_rows, reference_rows, retention_value, sensitivity_cells, sensitivity_tables, summarize,
    verification_groups,
)
from harness.report.search_speed import SEARCH_SPEED_HEADERS
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


# Identity columns: never wrapped, never cut (six rows of one model must stay apart at any width).
_IDENTITY = ("model", "format", "precision")
# Never wrapped either: short words with a note number ("failed [1]", "INVALID [2]").
_NO_WRAP = _IDENTITY + ("status", "validity")


class SummaryView:
    """The per-entry summary after `bench run`, laid out for the console's width: one table when every column fits
    uncut, else two (speed, then accuracy), each led by model / format / precision. Failure and INVALID reasons
    are numbered notes under the table ("failed [1]"), so a long reason never wraps a row over ten lines."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.rows = [summarize(run, e) for e in run.entries]
        self.notes: list[str] = []
        self.status: list[Text] = []
        self.validity: list[Text] = []
        for s in self.rows:
            status = Text(s.status, style=_STATUS_STYLE.get(s.status, ""))
            if s.reason:
                status.append(f" [{self._note(s, s.reason)}]", style="dim")
            if s.fidelity_flag:  # built outside fidelity tolerance: the figures are in the lines below the table
                status.append(" flagged", style="yellow")
            self.status.append(status)
            validity = Text(s.validity, style="green" if s.validity == "VALID" else "red" if s.validity == "INVALID"
                            else "dim")
            if s.validity_reasons:
                validity.append(f" [{self._note(s, s.validity + ': ' + '; '.join(s.validity_reasons))}]",
                                style="dim")
            self.validity.append(validity)

    def _note(self, s: EntrySummary, text: str) -> int:
        self.notes.append(f"{s.model} {s.format or '-'} {s.precision or '-'}: {text}")
        return len(self.notes)

    def _table(self, title: str, columns: Sequence[tuple[str, str, Sequence[Text]]],
               widths: Sequence[int]) -> Table:
        table = Table(title=user_text(title), title_justify="left", box=None, pad_edge=False, padding=(0, 1),
                      header_style="bold underline")
        for (col, justify, _), width in zip(columns, widths):
            table.add_column(col, justify=justify, no_wrap=col in _NO_WRAP or justify == "right",  # type: ignore[arg-type]
                             width=width, overflow="fold")
        for i in range(len(self.rows)):
            table.add_row(*(cells[i] for _, _, cells in columns))
        return table

    @staticmethod
    def _widths(columns: Sequence[tuple[str, str, Sequence[Text]]], width: int) -> list[int] | None:
        """Column widths that fit `width` with nothing cut, or None. Identity and number columns keep their full
        width; text columns may wrap at spaces but never below their longest word (so nothing is folded)."""
        full, least = [], []
        for col, justify, cells in columns:
            texts = [col, *(c.plain for c in cells)]
            full.append(max(cell_len(line) for t in texts for line in t.splitlines() or [""]))
            keep = col in _NO_WRAP or justify == "right"
            least.append(full[-1] if keep else max(cell_len(w) for t in texts for w in t.split() or [""]))
        room = width - 2 * (len(columns) - 1)  # one space of padding either side of each inner border
        if sum(least) > room:
            return None
        widths = list(full)
        while sum(widths) > room:  # narrow the widest text column that can still give, one cell at a time
            i = max((j for j in range(len(widths)) if widths[j] > least[j]), key=lambda j: widths[j])
            widths[i] -= 1
        return widths

    def _columns(self) -> tuple[list[tuple[str, str, list[Text]]], list[tuple[str, str, list[Text]]]]:
        """(identity columns, the others in reading order): name, justification, one Text per entry."""
        t = user_text
        ident = [("model", "left", [t(s.model) for s in self.rows]),
                 ("format", "left", [t(s.format or "-") for s in self.rows]),
                 ("precision", "left", [t(s.precision or "-") for s in self.rows])]
        # The metric cell names the dataset, so the worst group can drop its "group_by=" prefix.
        metric = [f"{s.metric} ({s.dataset})" if s.metric and s.dataset else (s.metric or "-") for s in self.rows]
        worst = [s.worst_text for s in self.rows]
        rest = [("status", "left", self.status),
                ("p90 ms", "right", [t(fmt(s.p90_ms, ".2f")) for s in self.rows]),
                ("ips", "right", [t(fmt(s.throughput_ips, ".1f")) for s in self.rows]),
                ("metric", "left", [t(m) for m in metric]),
                ("overall", "right", [t(fmt_rate(s.overall)) for s in self.rows]),
                ("fnmr", "right", [t(fmt_rate(s.fnmr)) for s in self.rows]),
                ("worst group", "left", [t(w) for w in worst]),
                ("worst", "right", [t(fmt_rate(s.worst_value)) for s in self.rows]),
                ("x target", "right", [t(fmt(s.worst_multiple, ".1f")) for s in self.rows]),
                ("retention", "right", [t(fmt(s.worst_retention, ".4f")) for s in self.rows]),
                ("validity", "left", self.validity)]
        return ident, rest

    def tables(self, width: int) -> list[Table]:
        """As few tables as fit `width` uncut: columns are packed in reading order, each table led by the
        identity columns (a console too narrow even for those gets one column per table)."""
        title = f"run {self.run.run_id} on {self.run.target} ({self.run.doc['status']})"
        ident, rest = self._columns()
        packs: list[list[tuple[str, str, list[Text]]]] = [[]]
        for col in rest:
            if packs[-1] and self._widths(ident + packs[-1] + [col], width) is None:
                packs.append([])
            packs[-1].append(col)
        out = []
        for i, cols in enumerate(packs):
            widths = self._widths(ident + cols, width) or self._widths(ident + cols, 10_000)
            out.append(self._table(title if i == 0 else f"{title}, continued", ident + cols, widths or []))
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.tables(options.max_width)
        if self.notes:
            yield Text("notes:", style="bold")
        for i, note in enumerate(self.notes, 1):
            yield user_text(f"[{i}] {note}")
        if any(s.worst_multiple is not None for s in self.rows):
            yield Text("x target: the worst group's FMR as a multiple of the FMR the fp32 threshold was tuned to; "
                       "worst-group n: the subjects its interval rests on, and the pairs compared.", style="dim")


def summary_table(run: Run) -> SummaryView:
    """Per model x format x precision: status, p90 latency, throughput, headline metric (verification: FMR, with
    the overall FNMR at the same threshold and the worst group's multiple of the target FMR beside it), worst group
    with its subjects and pairs, worst-group retention, validity; reasons as notes below. Rates to three
    significant digits."""
    return SummaryView(run)


def kernel_path_lines(run: Run) -> list[Text]:
    """The machine's int8 kernel path (harness/kernel_path.py) and the fp32 reference's, with why that reference
    was chosen: two CPUs of one ISA can give one int8 pack different outputs."""
    from harness.kernel_path import describe, of_run

    ref = run.doc.get("reference") or {}
    lines = [user_text(f"int8 kernel path: {describe(of_run(run.doc))} "
                       f"({'the worker that ran the models' if run.doc.get('device_environment') else 'the host'}; "
                       f"derived from its CPU flags, not reported by the runtime)")]
    if ref.get("run"):
        lines.append(user_text(f"fp32 reference: run {ref['run']}, int8 kernel path "
                               f"{ref.get('kernel_path') or 'unknown'}"
                               f" ({ref.get('kernel_path_choice') or 'chosen before kernel paths were recorded'})"))
    return lines


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


# the report's columns less two the console has no room for: synthetic (gallery less the watchlist's size, which is
# its first row) and BLAS threads (the run's --threads, in its settings); run.json, the report and the export keep them
_SEARCH_CONSOLE_DROP = ("synthetic", "BLAS threads")
_SEARCH_KEEP = [i for i, h in enumerate(SEARCH_SPEED_HEADERS) if h not in _SEARCH_CONSOLE_DROP]
SEARCH_HEADERS = ("variant",) + tuple(SEARCH_SPEED_HEADERS[i] for i in _SEARCH_KEEP)


def search_rows(run: Run) -> dict[tuple[str, str], list[list[str]]]:
    """Per (model, watchlist dataset), per variant and gallery size: the on-device single-probe search latency
    (harness.results.rows.search_speed_records, as in `bench export` and the report) beside the entry's own
    inference latency; a failed search is one row with its reason."""
    from harness.report.search_speed import search_speed_cells

    out: dict[tuple[str, str], list[list[str]]] = {}
    for e in run.entries:
        for dataset, cells in search_speed_cells(e):
            out.setdefault((e["model"], dataset), []).append([e["variant"], *(cells[i] for i in _SEARCH_KEEP)])
    return out


def search_tables(run: Run) -> list[Table]:
    """The console's "watchlist search on the device" tables, one per model and dataset (docs/metrics.md
    "Identification"); [] without a search."""
    tables = []
    for (model, dataset), rows in search_rows(run).items():
        table = user_table(f"{model} on {dataset}: watchlist search on the device, one probe per call (top-k = "
                           f"host: probes whose top-10 equal the host scorer's)", SEARCH_HEADERS, rows,
                           title_justify="left")
        variant = table.columns[0]  # identity: never cut, so onnx-int8 and tflite-int8 rows stay apart at any width
        variant.no_wrap, variant.min_width = True, max(len(str(r[0])) for r in rows)
        tables.append(table)
    return tables
