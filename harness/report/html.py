"""Reports over one or more runs: ONE self-contained HTML file (inline CSS + inline SVG charts, no external URLs),
and Markdown / CSV exports of the same tables.

Every string that comes from a run (group names, reasons, environment values, ids) goes through html.escape:
group labels are user data (a dataset's own attribute values).
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.report import camera, charts
from harness.report.compare import CompareTable, compare, flatten
from harness.report.summary import (
    PAIRED_HEADERS, PAIRED_NOTE, SENSITIVITY_HEADERS, EntrySummary, fmt, fmt_ci, fmt_rate_row, higher_is_better,
    paired_rate_cells, paired_rate_rows, pipeline_sensitivity, rate_rows, reference_rows, sensitivity_cells,
    sensitivity_tables, verification_markdown,
)
from harness.report.tables import md_table
from harness.results.store import Run

FORMATS = ("html", "md", "csv")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:12.5px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.stamp{display:inline-block;padding:1px 7px;border-radius:3px;font-weight:600;font-size:11px;color:#fff}
.VALID{background:#2e7d32}.INVALID{background:#c62828}.na{background:#888}
.warn{background:#fff4e5;border-left:4px solid #ef6c00;padding:.4em .8em;margin:.3em 0}
svg{max-width:100%;height:auto}.chart{margin:.5em 0 1.5em}code{font-size:12px}
.scroll{overflow-x:auto}.nowrap td{white-space:nowrap}
"""

SECTIONS = ("Summary", "Per-group metrics", "Precision-loss deltas", "Threshold transfer", "Pipeline sensitivity",
            "Identification (1:N)", "Cross-ISA precision loss", "Camera", "Latency distributions", "Pareto front",
            "Validity", "Device state", "Provenance")
_SENSITIVITY_NOTE = ("The fp32 reference model on the same faces, chipped by the harness and by the model authors' "
                     "dlib pipeline (detector, 5-point landmarks, get_face_chip); Δ = upstream − harness with a "
                     "paired bootstrap interval; b: only the harness right, c: only upstream right; exact McNemar p.")


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[bool] | None = None) -> str:
    num = num or [False] * len(headers)
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if n else ''}>{e(c)}</td>" for c, n in zip(row, num)) + "</tr>"
                   for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def stamp(status: str) -> str:
    cls = status if status in ("VALID", "INVALID") else "na"
    return f'<span class="stamp {cls}">{e(status)}</span>'


def _series_label(run: Run, entry: dict[str, Any], runs: Sequence[Run]) -> str:
    label = f"{entry['variant']} @ {run.target}"
    if sum(r.target == run.target for r in runs) > 1:
        label += f" ({run.run_id[-6:]})"  # the random suffix tells two runs on one target apart
    return label


def _cells(table: CompareTable) -> list[EntrySummary]:
    return [c for r in table.rows for c in r.cells if c is not None]


def _summary_section(table: CompareTable) -> str:
    head = ["run", "target", "entry", "status", "p90 ms", "Δp90 %", "ips", "energy mJ", "above idle mJ",
            "above idle [95% CI]", "metric", "overall", "Δoverall [95% CI]", "worst group", "worst", "retention",
            "validity"]
    rows = []
    for r in table.long_rows():
        rows.append([r["run"], r["target"], f"{r['model']}--{r['variant']}", r["status"], r["p90_ms"], r["d_p90_pct"],
                     r["throughput_ips"], r["energy_mj"], r["net_energy_mj"], r["net_energy_ci_mj"], r["metric"],
                     r["overall"], r["d_overall"],
                     r["worst_group"], r["worst_value"], r["worst_retention"], r["validity"]])
    num = [h in ("p90 ms", "Δp90 %", "ips", "energy mJ", "above idle mJ", "overall", "worst", "retention")
           for h in head]
    out = html_table(head, rows, num)
    if table.warnings:
        out = "".join(f'<div class="warn">{e(w)}</div>' for w in table.warnings) + out
    return out


def _group_section(runs: Sequence[Run]) -> str:
    parts = []
    models = dict.fromkeys(e["model"] for run in runs for e in run.entries)
    for model in models:
        entries = [(run, e) for run in runs for e in run.entries if e["model"] == model and e["status"] == "ok"]
        # fmr_cross is a group x group matrix (dozens of pairs): unreadable as bars; it stays in the CSV export.
        metrics = dict.fromkeys(r["metric"] for _, e in entries for r in rate_rows(e) if r["metric"] != "fmr_cross")
        for metric in metrics:
            group_bys = dict.fromkeys(r["group_by"] for _, e in entries for r in rate_rows(e, metric)
                                      if r["group_by"] != "all")
            for by in group_bys:
                groups = list(dict.fromkeys(r["group"] for _, e in entries for r in rate_rows(e, metric)
                                            if r["group_by"] in (by, "all")))
                series = []
                for run, entry in entries:
                    rows = {r["group"]: r for r in rate_rows(entry, metric) if r["group_by"] in (by, "all")}
                    series.append((_series_label(run, entry, runs), [rows.get(g, {}).get("value") for g in groups],
                                   [(rows.get(g, {}).get("ci_lo"), rows.get(g, {}).get("ci_hi")) for g in groups]))
                direction = "higher" if higher_is_better(metric) else "lower"
                parts.append(f"<h3>{e(model)}: {e(metric)} by {e(by)} ({direction} is better)</h3>"
                             f'<div class="chart">{charts.group_bars(f"{model}: {metric} by {by}", groups, series, metric)}</div>')
    return "".join(parts) or "<p>No rate rows in these runs.</p>"


def _delta_section(runs: Sequence[Run]) -> str:
    parts = []
    for model in dict.fromkeys(e["model"] for run in runs for e in run.entries):
        cols, data = [], {}
        for run in runs:
            for entry in run.entries:
                if entry["model"] != model:
                    continue
                for r in reference_rows(entry, "deltas"):
                    value = r.get("delta", r.get("value"))
                    if value is None:
                        continue
                    col = _series_label(run, entry, runs)
                    cols.append(col)
                    data[(f"{r.get('metric', '')} {r['group_by']}={r['group']}", col)] = value
        if not data:
            continue
        cols = list(dict.fromkeys(cols))
        rows = list(dict.fromkeys(k[0] for k in data))
        m = np.array([[data.get((r, c), np.nan) for c in cols] for r in rows], dtype=float)
        parts.append(f"<h3>{e(model)}: variant − reference, per group</h3><div class=\"chart\">"
                     + charts.heatmap(f"{model}: precision-loss delta", rows, cols, m, "delta") + "</div>")
    return "".join(parts) or "<p>No precision-loss deltas (no reference entry in these runs).</p>"


def _threshold_section(runs: Sequence[Run]) -> str:
    parts = []
    for run in runs:
        for entry in run.entries:
            paired = paired_rate_rows(entry)
            if paired:
                parts.append(f"<h3>{e(entry['entry'])} @ {e(run.target)}: against fp32 at the fp32 threshold</h3>"
                             f"<p>{e(PAIRED_NOTE)}</p>"
                             + html_table(PAIRED_HEADERS, [paired_rate_cells(r) for r in paired],
                                          [h in ("subjects", "pairs", "fp32", "variant", "paired p")
                                           for h in PAIRED_HEADERS]))
            rows = reference_rows(entry, "threshold_transfer")
            for metric in dict.fromkeys(r.get("metric", "rate") for r in rows):
                sel = [r for r in rows if r.get("metric", "rate") == metric]
                values = [r.get(k) for r in sel for k in ("value_at_ref_threshold", "value_at_var_threshold")]
                if all(v == 0 for v in values):  # an empty chart says less than one line
                    parts.append(f"<h3>{e(entry['entry'])} @ {e(run.target)}: per-group {e(metric)}</h3>"
                                 f"<p>{e(metric)} is 0 in every group at both thresholds.</p>")
                    continue
                groups = [f"{r['group_by']}={r['group']}" for r in sel]
                svg = charts.paired_bars(f"{entry['entry']} @ {run.target}: {metric}", groups,
                                         [r.get("value_at_ref_threshold") for r in sel],
                                         [r.get("value_at_var_threshold") for r in sel],
                                         ("at reference (fp32) threshold", "re-tuned threshold"), metric)
                parts.append(f"<h3>{e(entry['entry'])} @ {e(run.target)}: per-group {e(metric)}</h3>"
                             f'<div class="chart">{svg}</div>')
    return "".join(parts) or "<p>No threshold-transfer rows (verification variants against a reference).</p>"


def _sensitivity_section(runs: Sequence[Run]) -> str:
    parts = []
    for run in runs:
        note, rows = pipeline_sensitivity(run)
        if note:
            parts.append(f'<div class="warn">{e(run.run_id)}: {e(note)}</div>')
        for (model, dataset), part in sensitivity_tables(rows).items():
            parts.append(f"<h3>{e(model)} on {e(dataset)}, run {e(run.run_id)} @ {e(run.target)}</h3>"
                         + html_table(SENSITIVITY_HEADERS, [sensitivity_cells(r) for r in part],
                                      [i >= 2 for i in range(len(SENSITIVITY_HEADERS))]))
    if not parts:
        return "<p>No pipeline-sensitivity rows (no gender model, or runs made before it existed).</p>"
    return f"<p>{e(_SENSITIVITY_NOTE)}</p>" + "".join(parts)


def _identification_section(runs: Sequence[Run]) -> str:
    from harness.report.identification import html_section  # it reads e/html_table from this module

    return html_section(runs)


def _latency_section(runs: Sequence[Run]) -> str:
    labels, samples = [], []
    for run in runs:
        for entry in run.entries:
            t = run.timings(entry["entry"])
            if t is not None and t.size:
                labels.append(f"{entry['entry']} @ {run.target}" + (f" ({run.run_id[-6:]})" if len(runs) > 1 else ""))
                samples.append(t)
    if not samples:
        return "<p>No raw timings in these runs.</p>"
    return f'<div class="chart">{charts.latency_boxes("single-stream latency", labels, samples)}</div>'


def _pareto_section(table: CompareTable) -> str:
    cand = [c for c in _cells(table) if c.status == "ok" and c.p90_ms is not None and c.worst_error is not None]
    if not cand:
        return "<p>No entry has both a latency and a per-group metric.</p>"
    parts = [f"<p>Per model, the Pareto front over ({e(', '.join(table.pareto_axes))}), all minimised. "
             "INVALID latency measurements are marked.</p>"]
    for model in dict.fromkeys(c.model for c in cand):
        mine = [c for c in cand if c.model == model]
        labels = [f"{c.variant}@{c.target}" + (" (INVALID)" if c.validity == "INVALID" else "") for c in mine]
        svg = charts.pareto_scatter(f"{model}: worst-group {mine[0].metric} error vs latency", labels,
                                    [c.p90_ms for c in mine], [c.worst_error for c in mine],
                                    [table.on_front(c) for c in mine])
        parts.append(f"<h3>{e(model)}</h3><div class=\"chart\">{svg}</div>")
    rows = [[c.run_id, c.target, c.entry, fmt(c.p90_ms, ".2f"), fmt(c.worst_error), fmt(c.energy_mj, ".2f"),
             c.validity, "on front" if table.on_front(c) else ""] for c in cand]
    parts.append(html_table(["run", "target", "entry", "p90 ms", "worst-group error", "energy mJ", "validity", ""],
                            rows, [False, False, False, True, True, True, False, False]))
    return "".join(parts)


def _cross_isa_section(table: CompareTable) -> str:
    if not table.cross_isa:
        return "<p>No run here compares the same packs on another instruction set (bench run --emulate arm64).</p>"
    return ("<p>Same pack, same inputs, reference ISA → device ISA (harness/metrics/cross_isa.py).</p>"
            + html_table(list(table.cross_isa[0]), [list(r.values()) for r in table.cross_isa]))


def _validity_section(table: CompareTable) -> str:
    rows = "".join(f"<tr><td>{e(c.run_id)}</td><td>{e(c.entry)}</td><td>{stamp(c.validity)}</td>"
                   f"<td>{e('; '.join(c.validity_reasons) or '-')}</td></tr>" for c in _cells(table))
    return ("<table><thead><tr><th>run</th><th>entry</th><th>validity</th><th>reasons</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _device_state_section(runs: Sequence[Run]) -> str:
    from harness.report import device_state

    found = device_state.rows(runs)
    if not found:
        return "<p>No entry recorded idle power, a power reading, a cool-down or a soak.</p>"
    return f"<p>{e(device_state.NOTE)}</p>" + html_table(list(device_state.HEADERS), found)


def _provenance_section(runs: Sequence[Run]) -> str:
    parts = []
    for run in runs:
        d = run.doc
        parts.append(f"<h3>run {e(run.run_id)}</h3>")
        parts.append(html_table(["created (UTC)", "finished (UTC)", "status", "target", "reference"],
                                [[d.get("created_utc"), d.get("finished_utc"), d.get("status"), run.target,
                                  "{variant} @ {target}".format(**{"variant": "-", "target": "-",
                                                                  **(d.get("reference") or {})})]]))
        parts.append(html_table(
            ["entry", "status", "reason", "model sha256", "runtime", "version", "requested", "active"],
            [[x["entry"], x["status"], x.get("reason") or "", x.get("model_sha256") or "",
              (x.get("backend") or {}).get("runtime"), (x.get("backend") or {}).get("version"),
              (x.get("backend") or {}).get("requested"), ", ".join((x.get("backend") or {}).get("active") or [])]
             for x in run.entries]))
        datasets = (d.get("data") or {}).get("datasets") or []
        parts.append(html_table(["dataset", "n", "manifest sha256", "group columns", "root"],
                                [[ds.get("id"), ds.get("n"), ds.get("manifest_sha256"),
                                  ", ".join(ds.get("group_columns") or []), ds.get("root")] for ds in datasets]))
        parts.append(html_table(["environment", "value"], [[k, v] for k, v in flatten(d.get("environment") or {})]))
    return "".join(parts)


def render_html(runs: Sequence[Run], title: str | None = None, alpha: float = camera.DEFAULT_ALPHA) -> str:
    """The whole report as one HTML string: no scripts, no external resources. alpha: the level of the camera
    section's paired tests (bench report --alpha)."""
    table = compare(runs)
    title = title or f"edge-fair-bench report: {', '.join(r.run_id for r in runs)}"
    body = {
        "Summary": _summary_section(table), "Per-group metrics": _group_section(runs),
        "Precision-loss deltas": _delta_section(runs), "Threshold transfer": _threshold_section(runs),
        "Pipeline sensitivity": _sensitivity_section(runs), "Identification (1:N)": _identification_section(runs),
        "Cross-ISA precision loss": _cross_isa_section(table), "Camera": camera.render_html_section(runs, alpha),
        "Latency distributions": _latency_section(runs), "Pareto front": _pareto_section(table),
        "Validity": _validity_section(table), "Device state": _device_state_section(runs),
        "Provenance": _provenance_section(runs),
    }
    toc = " · ".join(f'<a href="#s{i}">{e(s)}</a>' for i, s in enumerate(SECTIONS))
    sections = "".join(f'<section id="s{i}"><h2>{e(s)}</h2>{body[s]}</section>' for i, s in enumerate(SECTIONS))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{e(title)}</h1><nav>{toc}</nav>{sections}</body></html>\n")


def rates_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """Every rate row of every entry (fixed cut-offs included), then its identification (1:N) rate rows (FPIR,
    FNIR, rank-1/rank-10 hit rates per probe group, each tagged with `config`: own_gallery or reference_gallery, or
    device_search for the stored gallery's top-1 against float32's on the board (top1_differs_from_fp32),
    harness/results/rows.py), with run/target/entry columns first and any context columns (threshold,
    threshold_kind, dataset, config ...) after the standard ones: the long table the CSV holds."""
    from harness.results.rows import identification_records

    ids = ["run_id", "target", "entry", "model", "variant"]
    std = ["metric", "group_by", "group", "n", "k", "value", "ci_lo", "ci_hi", "small"]
    rows = [{"run_id": run.run_id, "target": run.target, "entry": x["entry"], "model": x["model"],
             "variant": x["variant"], **r}
            for run in runs for x in run.entries
            for r in rate_rows(x, all_thresholds=True) + identification_records(x)["identification"]]
    extra = sorted({k for r in rows for k in r} - set(ids) - set(std))
    return pd.DataFrame(rows, columns=ids + std + extra)


def render_csv(runs: Sequence[Run]) -> str:
    buf = io.StringIO()
    rates_frame(runs).to_csv(buf, index=False)
    return buf.getvalue()


def render_markdown(runs: Sequence[Run], alpha: float = camera.DEFAULT_ALPHA) -> str:
    """Summary (with deltas and warnings), then each entry's groups for its headline metric, then the camera
    section when the runs hold a capture-condition sweep (harness/report/camera.py)."""
    table = compare(runs)
    parts = [table.to_markdown()]
    for c in _cells(table):
        entry = next(x for x in next(r for r in runs if r.run_id == c.run_id).entries if x["entry"] == c.entry)
        if entry.get("task") == "verification":
            parts += verification_markdown(entry, f"{c.entry} @ {c.target} ({c.run_id})")
            if paired_rate_rows(entry):
                parts += [f"## {c.entry} @ {c.target} ({c.run_id}): against fp32 at the fp32 threshold", "",
                          PAIRED_NOTE, "", md_table(list(PAIRED_HEADERS),
                                                    [paired_rate_cells(r) for r in paired_rate_rows(entry)]), ""]
            continue
        rows = rate_rows(entry, c.metric) if c.metric else []
        if rows:
            parts += [f"## {c.entry} @ {c.target} ({c.run_id}): {c.metric} by group", "",
                      md_table(["dataset", "group by", "group", "n", "value", "95% CI", "small"],
                               [[r.get("dataset") or "-", r["group_by"], r["group"], r["n"], fmt_rate_row(r),
                                 fmt_ci(r), "yes" if r.get("small") else ""] for r in rows]), ""]
    from harness.report.identification import markdown_parts

    parts += markdown_parts(runs)
    for run in runs:
        note, rows = pipeline_sensitivity(run)
        if note or rows:
            parts += [f"## Pipeline sensitivity ({run.run_id})", "", _SENSITIVITY_NOTE, ""]
        if note:
            parts += [f"> {note}", ""]
        for (model, dataset), part in sensitivity_tables(rows).items():
            parts += [f"### {model} on {dataset}", "",
                      md_table(list(SENSITIVITY_HEADERS), [sensitivity_cells(r) for r in part]), ""]
    parts += camera.markdown_section(runs, alpha)
    from harness.report import device_state

    if state_rows := device_state.rows(runs):
        parts += ["## Device state", "", device_state.NOTE, "", md_table(list(device_state.HEADERS), state_rows), ""]
    return "\n".join(parts)


def report_format(out: Path | None, fmt_flag: str | None) -> str:
    """--format wins; otherwise the output suffix decides; HTML by default."""
    if fmt_flag:
        if fmt_flag not in FORMATS:
            raise UsageError(f"unknown report format '{fmt_flag}'; valid: {', '.join(FORMATS)}")
        return fmt_flag
    suffix = out.suffix.lower().lstrip(".") if out else ""
    return {"htm": "html", "markdown": "md"}.get(suffix, suffix) if suffix in FORMATS + ("htm", "markdown") else "html"


def render(runs: Sequence[Run], fmt_name: str, alpha: float = camera.DEFAULT_ALPHA) -> str:
    if fmt_name == "html":
        return render_html(runs, alpha=alpha)
    if fmt_name == "md":
        return render_markdown(runs, alpha=alpha)
    return render_csv(runs)
