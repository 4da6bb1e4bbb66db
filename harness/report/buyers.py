"""The procurement view (`bench report --devices`): one self-contained page that answers "which board, at which
precision, costs whom what" across boards (one run per target).

Sections (SECTIONS): verdicts written from the numbers; one row per board x precision per model (latency,
throughput, energy, init, peak memory, worst group with its interval, worst-group retention against fp32,
validity); FMR and FNMR per group at the fp32 threshold (threshold transfer); a Pareto scatter of speed against
worst-group error with intervals; per-group DET curves and FMR against threshold with the fp32 threshold and fixed
vendor cut-offs marked, plus what those cut-offs mean per group; nightly trends when given; provenance.

Figures come from harness.report.summary (the same as compare/report/gate) and, for the curves, from the runs'
per-sample embeddings (harness.metrics.det, subject-weighted like harness.metrics.verification). Every string
from a run is HTML-escaped (harness.report.html.e). No scripts, no external URLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from harness.report import charts
from harness.report.compare import pareto_front
from harness.report.html import _CSS, e, html_table
from harness.report.summary import (
    MIN_WORST_N, EntrySummary, fmt, fmt_rate, group_label, headline_dataset, higher_is_better, rate_rows, summarize, worst_group,
)
from harness.results.store import Run

VENDOR_CUTOFFS = (0.80, 0.95, 0.99)
SMALL_UNITS = 30  # per_group_error_rates' small_n: fewer subjects (FNMR) or subject pairs (FMR) is underpowered
SECTIONS = ("Verdicts", "Boards x precision", "Threshold transfer", "Speed against worst-group error",
            "DET curves and vendor cut-offs", "Nightly trends", "Provenance")
_MORE_CSS = ".verdict li{margin:.25em 0}.muted{color:#666;font-size:12px}"


def _board(run: Run) -> str:
    return run.target


def _precision(entry: dict[str, Any]) -> str:
    return entry["variant"]


def _worst_row(run: Run, entry: dict[str, Any], s: EntrySummary) -> dict[str, Any] | None:
    """The rate row summary.worst_group picked (for its interval and counts)."""
    if not s.metric:
        return None
    rows = [r for r in rate_rows(entry, s.metric) if s.dataset is None or r.get("dataset") == s.dataset]
    return worst_group(rows, s.metric)


def _ci(row: dict[str, Any] | None) -> str:
    if not row or row.get("ci_lo") is None or row.get("ci_hi") is None:
        return ""
    return f" [{fmt_rate(row['ci_lo'])}, {fmt_rate(row['ci_hi'])}]"


def _models(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(e["model"] for r in runs for e in r.entries))


def _cells(runs: Sequence[Run], model: str) -> list[tuple[Run, dict[str, Any], EntrySummary]]:
    out = []
    for run in runs:
        for entry in run.entries:
            if entry["model"] == model:
                out.append((run, entry, summarize(run, entry)))
    return out


def _fp32(cells, run: Run) -> tuple[Run, dict[str, Any], EntrySummary] | None:
    return next((c for c in cells if c[0] is run and c[1]["variant"] == "onnx-fp32" and c[1]["status"] == "ok"), None)


# ---- tables -----------------------------------------------------------------------------------------------------
def board_table(runs: Sequence[Run], model: str) -> str:
    cells = _cells(runs, model)
    head = ["board", "precision", "status", "p50 ms", "p90 ms", "inf/s", "energy mJ/inf", "init ms", "peak MB",
            "worst group", "worst value [95% CI]", "n", "worst-group retention vs fp32",
            "validity"]
    rows = []
    for run, entry, s in cells:
        speed = entry.get("speed") or {}
        w = _worst_row(run, entry, s)
        rows.append([
            _board(run), _precision(entry), s.status if s.status == "ok" else f"{s.status}: {s.reason or ''}",
            fmt(s.p50_ms, ".2f"), fmt(s.p90_ms, ".2f"), fmt(s.throughput_ips, ".1f"), fmt(s.energy_mj, ".2f"),
            fmt(speed.get("init_ms"), ".0f"), fmt((speed.get("memory") or {}).get("rss_peak_mb"), ".0f"),
            s.worst_group or "-", (fmt_rate(s.worst_value) + _ci(w)) if s.worst_value is not None else "-",
            fmt(w.get("n_subjects", w.get("n")) if w else None, "d"),
            (f"{s.worst_retention:.3f} ({s.worst_retention_group})" if s.worst_retention is not None
             else ("reference" if entry["variant"] == "onnx-fp32" else "-")),
            s.validity + (f": {'; '.join(s.validity_reasons)}" if s.validity_reasons else ""),
        ])
    num = [False, False, False] + [True] * 6 + [False, True, True, True, False]
    return html_table(head, rows, num)


def _verification_rows(run: Run, entry: dict[str, Any]) -> tuple[str | None, dict[str, dict[str, dict[str, Any]]]]:
    """(dataset, {group: {"fmr": row, "fnmr": row}}) at the tuned threshold (the fp32 one a variant inherits),
    on the headline dataset's default grouping."""
    rows = [r for r in rate_rows(entry) if r.get("metric") in ("fmr", "fnmr")]
    dataset = headline_dataset(run, rows)
    rows = [r for r in rows if r.get("dataset") == dataset]
    if not rows:
        return dataset, {}
    gb = rows[0]["group_by"]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["group_by"] == gb:
            out.setdefault(r["group"], {})[r["metric"]] = r
    return dataset, out


def transfer_table(runs: Sequence[Run], model: str) -> str:
    cells = [c for c in _cells(runs, model) if c[1]["status"] == "ok"]
    per = [(run, entry, *_verification_rows(run, entry)) for run, entry, _ in cells]
    groups = list(dict.fromkeys(g for *_, by in per for g in by))
    if not groups:
        return ""
    head = ["board", "precision", "threshold"] + [f"{g}: FMR / FNMR" for g in groups]
    rows = []
    for run, entry, _dataset, by in per:
        thr = next((r.get("threshold") for g in by.values() for r in g.values()), None)
        row = [_board(run), _precision(entry), fmt(thr, ".4f")]
        for g in groups:
            f, n = by.get(g, {}).get("fmr"), by.get(g, {}).get("fnmr")
            row.append(f"{fmt_rate(f.get('value')) if f else '-'}{'*' if f and f.get('small') else ''} / "
                       f"{fmt_rate(n.get('value')) if n else '-'}{'*' if n and n.get('small') else ''}")
        rows.append(row)
    return html_table(head, rows)


# ---- verdicts ---------------------------------------------------------------------------------------------------
def _power(row: dict[str, Any]) -> str:
    units = row.get("n_units") or row.get("n_subjects") or row.get("n")
    what = "subject pairs" if row.get("unit") == "subject_pair" else ("subjects" if row.get("unit") else "samples")
    return f"underpowered at n = {units} {what}" if row.get("small") else f"n = {units} {what}"


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if None in (a.get("ci_lo"), a.get("ci_hi"), b.get("ci_lo"), b.get("ci_hi")):
        return True
    return not (a["ci_hi"] < b["ci_lo"] or b["ci_hi"] < a["ci_lo"])


def verdicts(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Per board, one sentence per (model, non-fp32 precision) written from the figures: speed change, the group
    that loses most against fp32 on the same board (its values and intervals, its power), validity."""
    out: dict[str, list[str]] = {}
    for model in _models(runs):
        cells = _cells(runs, model)
        for run, entry, s in cells:
            lines = out.setdefault(_board(run), [])
            if entry["variant"] == "onnx-fp32":
                continue
            where = f"{model} {entry['variant']} on {_board(run)}"
            if s.status != "ok":
                lines.append(f"{where}: {s.status} ({s.reason or 'no reason recorded'})")
                continue
            ref = _fp32(cells, run)
            parts = []
            if ref and ref[2].p90_ms and s.p90_ms:
                parts.append(f"p90 {s.p90_ms:.2f} ms vs {ref[2].p90_ms:.2f} ms at fp32 "
                             f"({ref[2].p90_ms / s.p90_ms:.2f}x the speed)")
            parts.append(_fairness_sentence(run, entry, s, ref))
            if s.validity == "INVALID":
                parts.append(f"measurement INVALID ({'; '.join(s.validity_reasons) or 'no reason given'})")
            lines.append(f"{where}: " + "; ".join(p for p in parts if p))
    return out


def _fairness_sentence(run: Run, entry: dict[str, Any], s: EntrySummary, ref) -> str:
    if ref is None or not s.metric:
        return "no fp32 entry on this board to compare with"
    if s.metric == "fmr":  # verification: the group whose FMR at the fp32 threshold moves most
        _, mine = _verification_rows(run, entry)
        _, base = _verification_rows(ref[0], ref[1])
        moves = [(g, base[g]["fmr"], m["fmr"]) for g, m in mine.items() if g != "all" and "fmr" in m
                 and "fmr" in base.get(g, {}) and m["fmr"].get("value") is not None
                 and base[g]["fmr"].get("value") is not None]
        moves = [t for t in moves if (t[2].get("n_units") or 0) >= MIN_WORST_N] or moves  # as summary.worst_group
        if not moves:
            return "FMR per group not computable"
        g, b, m = max(moves, key=lambda t: (t[2]["value"] - t[1]["value"], -abs(t[2]["value"])))
        gb = m.get("group_by", "")
        text = (f"moves {gb}={g} FMR at the fp32 threshold from {fmt_rate(b['value'])}{_ci(b)} to "
                f"{fmt_rate(m['value'])}{_ci(m)}; {_power(m)}")
        return text + ("; intervals overlap: not distinguishable from fp32 at this n" if _overlap(b, m) else "")
    # classification / detection: the group with the lowest retention of its fp32 value
    rows = [r for r in rate_rows(entry, s.metric) if r.get("dataset") == s.dataset and r.get("group") != "all"]
    base = {(r["group_by"], r["group"]): r for r in rate_rows(ref[1], s.metric)
            if r.get("dataset") == s.dataset and r.get("group") != "all"}
    pairs = [(r, base[(r["group_by"], r["group"])]) for r in rows if (r["group_by"], r["group"]) in base
             and r.get("value") is not None and base[(r["group_by"], r["group"])].get("value")]
    pairs = [p for p in pairs if (p[0].get("n") or 0) >= MIN_WORST_N] or pairs  # as summary.worst_group
    if not pairs:
        return f"{s.metric} per group not computable"
    sign = 1.0 if higher_is_better(s.metric) else -1.0
    m, b = min(pairs, key=lambda p: sign * (p[0]["value"] - p[1]["value"]))
    text = (f"moves {group_label(m)} {s.metric} from {fmt_rate(b['value'])}{_ci(b)} at fp32 to "
            f"{fmt_rate(m['value'])}{_ci(m)}; {_power(m)}")
    return text + ("; intervals overlap: not distinguishable from fp32 at this n" if _overlap(b, m) else "")


# ---- charts -----------------------------------------------------------------------------------------------------
def pareto_chart(runs: Sequence[Run], model: str) -> str:
    pts = []
    for run, entry, s in _cells(runs, model):
        w = _worst_row(run, entry, s)
        if s.status != "ok" or s.p90_ms is None or s.worst_error is None or w is None:
            continue
        hib = higher_is_better(s.metric or "")
        lo, hi = w.get("ci_lo"), w.get("ci_hi")
        err_lo, err_hi = ((1 - hi, 1 - lo) if hib else (lo, hi)) if None not in (lo, hi) else (None, None)
        ss = (entry.get("speed") or {}).get("single_stream") or {}
        pts.append((f"{entry['variant'].split('-')[-1]} @ {_board(run)}", ss.get("p50_ms"), s.p90_ms,
                    ss.get("p99_ms"), s.worst_error, err_lo, err_hi))
    if not pts:
        return ""
    front = pareto_front([[p[2], p[4]] for p in pts])
    metric = next((s.metric for *_, s in _cells(runs, model) if s.metric), "")
    label = f"worst-group {'1 - ' + metric if higher_is_better(metric) else metric} (95% CI)"
    return charts.pareto_intervals(f"{model}: speed against worst-group error", [(*p, bool(f)) for p, f in
                                                                                 zip(pts, front)], label)


def _curves(run: Run, entry: dict[str, Any]):
    """(threshold, dataset, [GroupCurve], grid) for a verification entry from its per-sample embeddings."""
    from harness.metrics import pair_scores
    from harness.metrics.det import group_curves, threshold_grid
    from harness.scoring import _embeddings, samples_frame

    dataset, by = _verification_rows(run, entry)
    thr = next((r.get("threshold") for g in by.values() for r in g.values()), None)
    gb_name = next((r["group_by"] for g in by.values() for r in g.values()), None)
    if thr is None or gb_name is None:
        return None
    df = samples_frame(run.samples(entry["entry"]))
    if "embedding" not in df:
        return None
    df = df[(df["status"] == "ok") & (df["dataset"] == dataset)]
    gb = gb_name.split("*")
    if df.empty or not all(c in df for c in gb):
        return None
    groups = df[gb].astype(str).agg("*".join, axis=1).to_numpy()
    scores = pair_scores(_embeddings(df), df["subject"].astype(str).to_numpy(), groups, group_by=gb_name)
    grid = threshold_grid(scores, extra=(thr, *VENDOR_CUTOFFS))
    return thr, dataset, group_curves(scores, grid), grid


def det_section(runs: Sequence[Run], model: str) -> str:
    parts = []
    for run in runs:
        entries = [e for e in run.entries if e["model"] == model and e["status"] == "ok"]
        got = [(e, _curves(run, e)) for e in entries]
        got = [(e, c) for e, c in got if c is not None]
        if not got:
            continue
        det, fmr_t, cut_rows = [], [], []
        thr_fp32 = next((c[0] for e, c in got if e["variant"] == "onnx-fp32"), got[0][1][0])
        for style, (entry, (thr, dataset, curves, grid)) in enumerate(got):
            prec = entry["variant"].split("-")[-1]
            for c in curves:
                det.append((f"{c.group} · {prec}", style, c.fmr, c.fnmr))
                fmr_t.append((f"{c.group} · {prec}", style, c.thresholds, c.fmr))
                at = {t: c.fmr[np.searchsorted(grid, t)] for t in (thr, *VENDOR_CUTOFFS)}
                fn = {t: c.fnmr[np.searchsorted(grid, t)] for t in (thr, *VENDOR_CUTOFFS)}
                cut_rows.append([prec, c.group, c.n_subjects] + [f"{_r(at[t])} / {_r(fn[t])}"
                                                                 for t in (thr, *VENDOR_CUTOFFS)])
        marks = [(thr_fp32, f"fp32 threshold {thr_fp32:.3f}")] + [(t, f"vendor {t:.2f}") for t in VENDOR_CUTOFFS]
        parts.append(f"<h3>{e(model)} on {e(_board(run))}</h3>"
                     f"<div class=chart>{charts.det_curves(f'{model} on {_board(run)}: DET per group', det)}</div>"
                     f"<div class=chart>{charts.fmr_vs_threshold(f'{model} on {_board(run)}: FMR against threshold', fmr_t, marks)}</div>"
                     "<p class=muted>What each cut-off means on this board, per group: FMR / FNMR (subject-weighted). "
                     "A vendor's fixed cut-off is not an FMR: read its row.</p>"
                     + html_table(["precision", "group", "subjects", f"at fp32 threshold {thr_fp32:.3f}"]
                                  + [f"at {t:.2f}" for t in VENDOR_CUTOFFS], cut_rows))
    return "".join(parts)


def _r(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else fmt_rate(float(v))


def trend_charts(series, metric: str) -> str:
    """One chart per board: its entries' series with change points ringed."""
    out = []
    for board in dict.fromkeys(s.target for s in series):
        mine = [s for s in series if s.target == board]
        svg = charts.trend_lines(f"{metric} on {board}", [(s.entry, s.created, s.values, [st.index for st in s.steps])
                                                           for s in mine], metric)
        steps = [[s.entry, st.run_id, f"{st.before:.4g}", f"{st.after:.4g}",
                  fmt(st.change_pct, "+.1f")] for s in mine for st in s.steps]
        out.append(f"<div class=chart>{svg}</div>" + (html_table(["entry", "first run of the new level", "before",
                                                                   "after", "change %"], steps) if steps else
                                                       "<p class=muted>No change points.</p>"))
    return "".join(out)


def trend_page(series, metric: str) -> str:
    """`bench trend -o`: the trend charts as a page of their own."""
    return _page(f"Trend of {metric}", f"<h2>{e(metric)}</h2>" + trend_charts(series, metric))


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<style>{_CSS}{_MORE_CSS}</style></head><body><h1>{e(title)}</h1>{body}</body></html>")


def render(runs: Sequence[Run], *, store_uri: str | None = None, trends: Sequence[tuple[str, list]] = ()) -> str:
    """The whole procurement page for `runs` (one per board); `trends`: (metric, [trend.Series]) to chart."""
    boards = [_board(r) for r in runs]
    body = [f"<p class=muted>{len(runs)} board(s): {e(', '.join(boards))}. Generated "
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
            + (f" from {e(store_uri)}" if store_uri else "") + ". Rates to three significant digits with 95% "
            "intervals; '*' marks a rate on fewer than 30 subjects or subject pairs.</p>"]
    body.append("<h2 id=verdicts>Verdicts</h2>")
    for board, lines in verdicts(runs).items():
        body.append(f"<h3>{e(board)}</h3><ul class=verdict>" + "".join(f"<li>{e(x)}</li>" for x in lines)
                    + "</ul>" if lines else f"<h3>{e(board)}</h3><p class=muted>fp32 only: nothing to compare.</p>")
    body.append("<h2 id=boards>Boards x precision</h2>")
    for model in _models(runs):
        metric = next((f"{s.metric} on {s.dataset}" for *_, s in _cells(runs, model) if s.metric), "")
        body.append(f"<h3>{e(model)}: worst group by {e(metric)}</h3>" + board_table(runs, model))
    transfer = [(m, transfer_table(runs, m)) for m in _models(runs)]
    if any(t for _, t in transfer):
        body.append("<h2 id=transfer>Threshold transfer: FMR and FNMR per group at the fp32 threshold</h2>"
                    "<p class=muted>Each variant keeps the threshold tuned on fp32 (what a fielded device inherits)."
                    "</p>" + "".join(f"<h3>{e(m)}</h3>{t}" for m, t in transfer if t))
    body.append("<h2 id=pareto>Speed against worst-group error</h2>")
    body += [f"<div class=chart>{svg}</div>" for m in _models(runs) if (svg := pareto_chart(runs, m))]
    det = "".join(det_section(runs, m) for m in _models(runs))
    if det:
        body.append("<h2 id=det>DET curves and vendor cut-offs</h2><p class=muted>FNMR against FMR per group, both "
                    "log (NIST FRVT); solid: first precision, dashed: second, dotted: third. A rate of 0 is drawn "
                    "on the axis edge.</p>" + det)
    if trends:
        body.append("<h2 id=trends>Nightly trends</h2>" + "".join(trend_charts(s, m) for m, s in trends if s))
    body.append("<h2 id=provenance>Provenance</h2>" + html_table(
        ["board", "run", "created (UTC)", "commit", "status"],
        [[r.target, r.run_id, r.doc.get("created_utc"), (((r.doc.get("environment") or {}).get("git") or {})
                                                         .get("commit") or "-")[:10], r.doc.get("status")]
         for r in runs]))
    return _page("Which board, at which precision, costs whom what", "".join(body))
