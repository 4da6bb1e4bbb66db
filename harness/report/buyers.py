"""The procurement view (`bench report --devices`): one self-contained page that answers "which board, at which
precision, costs whom what" across boards (one run per target).

Sections (SECTIONS): verdicts written from the numbers; one row per board x precision per model (latency,
throughput, energy, init, peak memory, worst group with its interval, worst-group retention against fp32,
validity); FMR and FNMR per group at the fp32 threshold (threshold transfer); a Pareto scatter of speed against
worst-group error with intervals; per-group DET curves and FMR against threshold with the fp32 threshold and fixed
vendor cut-offs marked, plus what those cut-offs mean per group; when the runs hold a capture-condition sweep
(`bench run --condition`), the camera section's per-group curves (harness/report/camera.py) as error rates on log
axes; nightly trends when given; provenance.

Figures come from harness.report.summary (the same as compare/report/gate) and, for the curves, from the runs'
per-sample embeddings (harness.metrics.det, subject-weighted like harness.metrics.verification). Every string
from a run is HTML-escaped (harness.report.html.e). No scripts, no external URLs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:  # Python 3.11+; tomli is the declared fallback for 3.10 in pyproject.toml
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np

from harness.metrics.inputs import group_labels
from harness.report import buyers_1n, charts
from harness.report.compare import pareto_front
from harness.report.html import _CSS, e, html_table
from harness.report.procurement import (
    DEFAULT_POLICY, FAIL, PASS, UNSURE, Finding, ProcurementPolicy, entry_findings, ranked,
)
from harness.report.procurement_1n import identification_findings, is_1n_criterion
from harness.report.summary import (
    MIN_WORST_N, PAIRED_HEADERS, PAIRED_NOTE, EntrySummary, fmt, fmt_rate, group_label, headline_dataset,
    higher_is_better, paired_rate_cells, paired_rate_rows, rate_rows, summarize, verification_group_rows,
    worst_group,
)
from harness.results.provenance import board as run_board
from harness.results.provenance import provenance as run_provenance
from harness.results.store import Run

VENDOR_CUTOFFS = (0.80, 0.95, 0.99)
SMALL_UNITS = 30  # per_group_error_rates' small_n: fewer subjects (FNMR) or subject pairs (FMR) is underpowered
SECTIONS = ("Decision against the stated policy", "Verdicts", "The data set", "The systems", "Boards x precision",
            "Precision loss at the fp32 threshold", "Identification (1:N)", "Speed against worst-group error",
            "DET curves and vendor cut-offs", "The camera: each group under capture conditions", "Nightly trends",
            "Provenance")
# Tables wrap instead of scrolling (a scroll box prints as a clipped table), on screen and in print; print is A4
# landscape with small type, headers repeated on each page, rows and charts kept whole.
_MORE_CSS = (".verdict li{margin:.25em 0}.muted{color:#555;font-size:12px}"
             ".scroll{overflow:visible}table{max-width:100%}th,td{overflow-wrap:break-word;vertical-align:top}"
             "@page{size:A4 landscape;margin:9mm}"
             "@media print{body{max-width:none;margin:0;padding:0;font-size:9.5px}"
             "table{width:100%;font-size:7.5px;table-layout:auto}th,td{padding:1px 3px}"
             "thead{display:table-header-group}tr,.chart,.warn{break-inside:avoid}h2,h3,h4{break-after:avoid}"
             "svg{max-width:100%;height:auto}}")


def provenance(run: Run) -> tuple[str, str]:
    """(kind, why): real, emulated or imported (harness.results.provenance)."""
    return run_provenance(run.doc)


def _board(run: Run) -> str:
    """The board as every section names it: its target, marked when the run is emulated or imported."""
    return run_board(run.doc)


def _precision(entry: dict[str, Any]) -> str:
    """format-precision ("onnx-int8", "tflite-int8"): two int8 builds are two different models."""
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


_SUMMARIES: dict[tuple[int, int], tuple[Run, dict[str, Any], EntrySummary]] = {}


def _summary(run: Run, entry: dict[str, Any]) -> EntrySummary:
    """An entry's summary, computed once per page (every section reads the same one; render empties the cache).
    Keyed by the objects themselves: the cache holds them, so an id is never reused while its entry is here."""
    hit = _SUMMARIES.get((id(run), id(entry)))
    if hit is None or hit[0] is not run or hit[1] is not entry:
        hit = _SUMMARIES[(id(run), id(entry))] = (run, entry, summarize(run, entry))
    return hit[2]


def _cells(runs: Sequence[Run], model: str) -> list[tuple[Run, dict[str, Any], EntrySummary]]:
    return [(run, entry, _summary(run, entry)) for run in runs for entry in run.entries if entry["model"] == model]


def _fp32(cells, run: Run) -> tuple[Run, dict[str, Any], EntrySummary] | None:
    return next((c for c in cells if c[0] is run and c[1]["variant"] == "onnx-fp32" and c[1]["status"] == "ok"), None)


# ---- tables -----------------------------------------------------------------------------------------------------
def board_table(runs: Sequence[Run], model: str) -> str:
    cells = _cells(runs, model)
    head = ["board", "precision", "status", "p50 ms", "p90 ms", "inf/s", "energy mJ/inf", "init ms", "peak MB",
            "worst group", "worst value [95% CI]", "x target", "n", "worst-group retention vs fp32", "validity"]
    rows = []
    for run, entry, s in cells:
        speed = entry.get("speed") or {}
        w = _worst_row(run, entry, s)
        small = "*" if w and w.get("small") else ""
        worst = s.worst_group or "-"
        if s.worst_tied:  # named when few, counted when many (the per-group table lists them all)
            worst += (f" (tied within intervals with {', '.join(g.split('=', 1)[-1] for g in s.worst_tied)})"
                      if len(s.worst_tied) <= 2 else f" (tied within intervals with {len(s.worst_tied)} groups)")
        rows.append([
            _board(run), _precision(entry), s.status if s.status == "ok" else f"{s.status}: {s.reason or ''}",
            fmt(s.p50_ms, ".2f", blank(s, "latency")), fmt(s.p90_ms, ".2f", blank(s, "latency")),
            fmt(s.throughput_ips, ".1f", blank(s, "throughput")), energy_cell(s, speed),
            fmt(speed.get("init_ms"), ".0f", blank(s, "init")),
            fmt((speed.get("memory") or {}).get("rss_peak_mb"), ".0f", blank(s, "memory")),
            worst, (fmt_rate(s.worst_value) + small + _ci(w)) if s.worst_value is not None else blank(s, "worst"),
            fmt(s.worst_multiple, ".2f", "not verification" if s.metric != "fmr" else blank(s, "worst")),
            s.worst_n_text if w else blank(s, "worst"),
            (f"{s.worst_retention:.3f} ({s.worst_retention_group})" if s.worst_retention is not None
             else ("reference" if entry["variant"] == "onnx-fp32" else
                   "FMR: see x target and the paired table" if s.metric == "fmr" else blank(s, "retention"))),
            s.validity + (f": {'; '.join(s.validity_reasons)}" if s.validity_reasons else ""),
        ])
    num = [False, False, False] + [True] * 6 + [False, True, True, True, True, False]
    return html_table(head, rows, num)


def energy_cell(s: EntrySummary, speed: dict[str, Any]) -> str:
    """Energy per inference (whole board, gross) and beside it the energy above the idle board with its 95% interval
    (run.json `speed.energy_above_idle`, harness/metrics/energy.py), or why that is not there."""
    gross = fmt(s.energy_mj, ".2f", blank(s, "energy"))
    net = speed.get("energy_above_idle")
    if s.energy_mj is None or not isinstance(net, dict):
        return gross
    e, ci = net.get("energy_mj_per_inference"), net.get("energy_ci_mj")
    if not isinstance(e, (int, float)) or isinstance(e, bool):
        return f"{gross} (above idle: {net.get('reason') or 'not recorded'})"
    interval = (f" [{fmt(ci[0], '.2f')}, {fmt(ci[1], '.2f')}]" if isinstance(ci, list) and len(ci) == 2
                else f" ({net.get('interval_reason') or 'no interval'})")
    return f"{gross} (above idle {fmt(e, '.2f')}{interval})"


def blank(s: EntrySummary, what: str) -> str:
    """Why a cell is empty: every blank on the page says why."""
    if s.status != "ok":
        return f"not measured: entry {s.status}"
    if what == "energy":
        return "unavailable: no power rail on this target"
    if what == "memory":
        return "not recorded"
    if what in ("worst", "retention"):
        return "no group rates" if what == "worst" else "no fp32 entry on this board"
    return "not recorded"


def transfer_table(runs: Sequence[Run], model: str) -> str:
    cells = [c for c in _cells(runs, model) if c[1]["status"] == "ok"]
    per = [(run, entry, *verification_group_rows(run, entry)) for run, entry, _ in cells]
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
    """The group that moves most against fp32 on the same board, judged by the paired test over the shared
    samples or pairs (McNemar on flips, or the paired subject bootstrap for verification); marginal intervals only
    where no paired rows exist. Says which test, its p and its n."""
    if ref is None or not s.metric:
        return "no fp32 entry on this board to compare with"
    if s.metric == "fmr":  # verification: the group whose FMR at the fp32 threshold moves most
        paired = [r for r in paired_rate_rows(entry) if r["metric"] == "fmr" and r["group"] != "all"
                  and (s.dataset is None or r.get("dataset") == s.dataset)]
        paired = [r for r in paired if (r.get("n_units") or 0) >= MIN_WORST_N] or paired  # as summary.worst_group
        if paired:
            r = max(paired, key=lambda t: (t["delta"], -t["ref_value"]))
            moved = r.get("ci_lo") is not None and (r["ci_lo"] > 0 or r["ci_hi"] < 0)
            return (f"moves {r['group_by']}={r['group']} FMR at the fp32 threshold from {fmt_rate(r['ref_value'])} "
                    f"to {fmt_rate(r['var_value'])} ({r['ref_k']} → {r['var_k']} of {r['n']} impostor pairs, "
                    f"{r['n_subjects']} subjects); paired subject bootstrap over the same pairs: change "
                    f"[{fmt_rate(r['ci_lo'])}, {fmt_rate(r['ci_hi'])}], p = {fmt(r.get('p_value'), '.3g')}"
                    + ("" if moved else "; not distinguishable from fp32 at this n")
                    + ("; underpowered" if r.get("small") else ""))
        _, mine = verification_group_rows(run, entry)
        _, base = verification_group_rows(ref[0], ref[1])
        moves = [(g, base[g]["fmr"], m["fmr"]) for g, m in mine.items() if g != "all" and "fmr" in m
                 and "fmr" in base.get(g, {}) and m["fmr"].get("value") is not None
                 and base[g]["fmr"].get("value") is not None]
        moves = [t for t in moves if (t[2].get("n_units") or 0) >= MIN_WORST_N] or moves  # as summary.worst_group
        if not moves:
            return "FMR per group not computable"
        g, b, m = max(moves, key=lambda t: (t[2]["value"] - t[1]["value"], -abs(t[2]["value"])))
        gb = m.get("group_by", "")
        text = (f"moves {gb}={g} FMR at the fp32 threshold from {fmt_rate(b['value'])}{_ci(b)} to "
                f"{fmt_rate(m['value'])}{_ci(m)}; {_power(m)}; marginal intervals (no shared pairs recorded)")
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
    flip = next((f for f in (((entry.get("metrics") or {}).get("reference") or {}).get("flips") or [])
                 if f.get("metric") == s.metric and f.get("group_by") == m["group_by"]
                 and f.get("group") == m["group"] and f.get("dataset", s.dataset) == s.dataset), None)
    if flip is not None:
        sig = flip["p_value"] < 0.05
        return (text + f"; exact McNemar on the same samples: {flip['b']} lost, {flip['c']} gained of {flip['n']}, "
                f"p = {flip['p_value']:.3g}" + ("" if sig else "; not distinguishable from fp32 at this n"))
    return text + ("; marginal intervals (no shared samples recorded)"
                   + ("; intervals overlap: not distinguishable from fp32 at this n" if _overlap(b, m) else ""))


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


_SAMPLES: dict[tuple[str, str], Any] = {}


def _samples(run: Run, entry_id: str):
    """An entry's per-sample frame, read once per page (the data-set card and the curves share it)."""
    from harness.scoring import samples_frame

    key = (run.run_id, entry_id)
    if key not in _SAMPLES:
        _SAMPLES[key] = samples_frame(run.samples(entry_id))
    return _SAMPLES[key]


def _scores(run: Run, entry: dict[str, Any]):
    """(fp32-tuned threshold, target FMR, dataset, PairScores) of a verification entry from its per-sample
    embeddings, on the headline dataset's default grouping; None when it has none."""
    from harness.metrics import pair_scores
    from harness.scoring import _embeddings, samples_frame

    dataset, by = verification_group_rows(run, entry)
    thr = next((r.get("threshold") for g in by.values() for r in g.values()), None)
    target = next((r.get("target_fmr") for g in by.values() for r in g.values()), None)
    gb_name = next((r["group_by"] for g in by.values() for r in g.values()), None)
    if thr is None or gb_name is None:
        return None
    df = _samples(run, entry["entry"])
    if "embedding" not in df:
        return None
    df = df[(df["status"] == "ok") & (df["dataset"] == dataset)]
    gb = gb_name.split("*")
    if df.empty or not all(c in df for c in gb):
        return None
    groups = group_labels(df, gb, "the buyer's page")[1].to_numpy()
    return thr, target, dataset, pair_scores(_embeddings(df), df["subject"].astype(str).to_numpy(), groups,
                                             group_by=gb_name)


# Resamples for the vendor cut-off intervals computed on the page (run.json holds intervals only at the run's own
# cut-offs); enough for a 95% percentile interval to two digits, and keeps the page fast.
PAGE_N_BOOT = 200


def det_section(runs: Sequence[Run], model: str) -> str:
    """Per board: DET and FMR-against-threshold small multiples (one panel per precision, one line per group),
    then the cut-off table: FMR and FNMR per group at the fp32 threshold and at 0.80 / 0.95 / 0.99 with counts,
    95% subject intervals and the small-sample mark."""
    from harness.metrics import per_group_error_rates
    from harness.metrics.det import group_curves, threshold_grid

    parts = []
    for run in runs:
        entries = [x for x in run.entries if x["model"] == model and x["status"] == "ok"]
        got = [(x, sc) for x in entries if (sc := _scores(run, x)) is not None]
        if not got:
            continue
        thr_fp32 = next((sc[0] for x, sc in got if x["variant"] == "onnx-fp32"), got[0][1][0])
        target = next((sc[1] for _, sc in got if sc[1] is not None), None)
        det, fmr_t, rows = [], [], []
        for entry, (thr, _target, _dataset, scores) in got:
            grid = threshold_grid(scores, extra=(thr, *VENDOR_CUTOFFS))
            curves = group_curves(scores, grid)
            det.append((_precision(entry), [(c.group, c.fmr, c.fnmr) for c in curves]))
            fmr_t.append((_precision(entry), [(c.group, c.thresholds, c.fmr) for c in curves]))
            at = per_group_error_rates(scores, threshold=None, fixed_thresholds=(thr, *VENDOR_CUTOFFS),
                                       n_boot=PAGE_N_BOOT, seed=0)
            cell = {(r["metric"], r["group"], r["threshold"]): r for r in at if r["metric"] in ("fmr", "fnmr")}
            for g in ("all", *scores.groups):
                subjects = next((r.get("n_subjects") for r in at if r["group"] == g and r["metric"] == "fmr"), None)
                rows.append([_precision(entry), g, fmt(subjects, "d", "-")]
                            + [_cut(cell.get(("fmr", g, float(t))), cell.get(("fnmr", g, float(t))))
                               for t in (thr, *VENDOR_CUTOFFS)])
        marks = [(thr_fp32, f"fp32 threshold {thr_fp32:.3f}")] + [(t, f"{t:.2f}") for t in VENDOR_CUTOFFS]
        where = f"{model} on {_board(run)}"
        tuned = f" (tuned on fp32 for FMR {target:g})" if target else ""
        parts.append(f"<h3>{e(where)}</h3>"
                     f"<div class=chart>{charts.det_facets(f'{where}: DET per group, one panel per precision', det)}</div>"
                     f"<div class=chart>{charts.fmr_threshold_facets(f'{where}: FMR against threshold', fmr_t, marks)}</div>"
                     f"<p class=muted>Vendor cut-offs: 0.80, 0.95 and 0.99 are cosine similarities of THIS model's "
                     f"embeddings, not a vendor's percentage or confidence; the fp32 threshold {thr_fp32:.4f}"
                     f"{e(tuned)} is the one each variant inherits. Each cell: FMR (false matches / same-group "
                     "impostor pairs) and FNMR (non-matches / genuine pairs), subject-weighted, with 95% subject "
                     "intervals; * marks fewer than 30 subjects or subject pairs.</p>"
                     + html_table(["precision", "group", "subjects", f"at the fp32 threshold {thr_fp32:.3f}"]
                                  + [f"at {t:.2f}" for t in VENDOR_CUTOFFS], rows))
    return "".join(parts)


CAMERA_FLOOR = 1e-3  # the camera curves' log floor: a face set of a few hundred has no rate below it


def camera_section(runs: Sequence[Run]) -> str:
    """The camera section's per-group curves (harness/report/camera.py, the same rows as `bench report`'s Camera
    section) for each capture-condition sweep among `runs`: each rate as an error (1 - accuracy, 1 - recall, FMR,
    FNMR at the unmodified run's fp32 threshold, FPIR and FNIR of the watchlist search at its fp32-tuned threshold)
    with its 95% interval, log axis, one panel per precision, each
    group in its Okabe-Ito colour and dash; '' without a sweep. The paired tests stay in `bench report`."""
    from harness.report import camera

    parts = []
    for sweep, blocks, notes in camera.camera_report(runs).sweeps:
        parts.append(f"<h3>{e(sweep.title)}</h3>" + "".join(f'<div class="warn">{e(n)}</div>' for n in notes))
        for block in blocks:
            parts += [f"<p class=muted>{e(n)}</p>" for n in block.notes]
            for metric in dict.fromkeys(r["metric"] for r in block.curves):
                name, panels = camera.error_panels(sweep, block, metric)
                if panels:
                    svg = charts.level_facets(f"{block.model} on {block.dataset}: {name} per group against "
                                              f"{sweep.name} ({sweep.unit})", panels, camera.level_labels(sweep),
                                              f"{sweep.name} ({sweep.unit})", name, log_floor=CAMERA_FLOOR)
                    parts.append(f"<div class=chart>{svg}</div>")
    return "".join(parts)


def _cut(fmr: dict[str, Any] | None, fnmr: dict[str, Any] | None) -> str:
    def one(name: str, r: dict[str, Any] | None) -> str:
        if r is None:
            return f"{name} -"
        if r.get("value") is None:
            return f"{name} not computable: {r.get('reason', 'no pairs')}"
        return (f"{name} {fmt_rate(r['value'])}{'*' if r.get('small') else ''} ({r['k']}/{r['n']})"
                f"{_ci(r)}")
    return f"{one('FMR', fmr)}; {one('FNMR', fnmr)}"


def trend_charts(series, metric: str) -> str:
    """One chart per board: its entries' series with the flagged change points ringed; below it each change point
    with the rule or test that judged it (a rate's candidate its test did not support: "not flagged")."""
    out = []
    for board in dict.fromkeys(s.target for s in series):
        mine = [s for s in series if s.target == board]
        svg = charts.trend_lines(f"{metric} on {board}", [(s.label, s.created, s.values, [st.index for st in s.steps])
                                                           for s in mine], metric)
        steps = [[s.label, st.run_id, f"{st.before:.4g}", f"{st.after:.4g}", fmt(st.change_pct, "+.1f"),
                  ("flagged: " if flag else "not flagged: ") + st.rule()]
                 for s in mine for flag, group in ((True, s.steps), (False, s.noise)) for st in group]
        out.append(f"<div class=chart>{svg}</div>" + (html_table(["entry", "first run of the new level", "before",
                                                                   "after", "change %", "judged by"], steps)
                                                       if steps else "<p class=muted>No change points.</p>"))
    return "".join(out)


def trend_page(series, metric: str) -> str:
    """`bench trend -o`: the trend charts as a page of their own."""
    return _page(f"Trend of {metric}", f"<h2>{e(metric)}</h2>" + trend_charts(series, metric))


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<style>{_CSS}{_MORE_CSS}</style></head><body><h1>{e(title)}</h1>{body}</body></html>")


# ---- decision against the buyer's policy -----------------------------------------------------------------------
def findings(runs: Sequence[Run], policy: ProcurementPolicy) -> list[Finding]:
    return ranked([f for run in runs for entry in run.entries
                   for f in (*entry_findings(policy, _board(run), run, entry),
                             *identification_findings(policy, _board(run), entry))])


RETENTION_DEFINITION = (
    "Retention: a group's success rate on a variant divided by the same group's rate at fp32 on the same board and "
    "the same samples (accuracy for gender, recall for detection, TAR = 1 − FNMR at the fp32 threshold for "
    "verification). The policy's rule is MLPerf Inference's accuracy rule (\u201c99% of fp32\u201d) applied to "
    "every group. FMR is not a success rate (99% of a 0.999 true-non-match rate says nothing): it is judged "
    "against the target, as a multiple of it, with its ratio to fp32 beside it.")


def decision_section(runs: Sequence[Run], policy: ProcurementPolicy) -> str:
    found = findings(runs, policy)
    out = [f"<p><b>Policy</b> ({e(policy.name)}): {e(policy.sentence())}. Each board × model × precision gets, "
           "per group, <b>pass</b> (the 95% interval clears the criterion), <b>fail</b> (it misses it: the "
           f"interval, or for retention a paired test at α = {policy.alpha:g}), or <b>cannot tell at this n</b>."
           "</p>", f"<p class=muted>{e(RETENTION_DEFINITION)}</p>"]
    # one row per board x model x precision: how many groups pass / fail / cannot tell per criterion
    tally: dict[tuple[str, str, str], dict[str, dict[str, int]]] = {}
    for f in found:
        crit = tally.setdefault((f.board, f.model, f.variant), {}).setdefault(f.criterion, {})
        crit[f.verdict] = crit.get(f.verdict, 0) + 1
    rows = []
    for (board, model, variant), crits in tally.items():
        overall = FAIL if any(FAIL in c for c in crits.values()) else (
            UNSURE if any(UNSURE in c for c in crits.values()) else PASS)
        rows.append([model, board, variant, overall] + ["; ".join(
            f"{n} {v}" for v in (FAIL, UNSURE, PASS) if (n := crits.get(c, {}).get(v))) or "not applicable"
            for c in ("FMR target", "speed")] + ["; ".join(f"{c}: " + ", ".join(
                f"{n} {v}" for v in (FAIL, UNSURE, PASS) if (n := k.get(v))) for c, k in crits.items()
                if c not in ("FMR target", "speed") and is_1n_criterion(c) == part) or "not applicable"
                for part in (False, True)])
    out.append(html_table(["model", "board", "precision", "decision", "FMR target (groups)", "speed",
                           "floors and retention (groups)", "1:N watchlist search (groups)"], rows))
    bad = [f for f in found if f.verdict != PASS]
    out.append(f"<h3>Findings, largest first ({sum(f.verdict == FAIL for f in found)} fail, "
               f"{sum(f.verdict == UNSURE for f in found)} cannot tell, {sum(f.verdict == PASS for f in found)} "
               "pass)</h3>")
    shown_ = bad[:MAX_FINDINGS]
    out.append("<ol class=verdict>" + "".join(f"<li><b>{e(f.verdict)}</b>: {e(f.sentence())}</li>" for f in shown_)
               + "</ol>" if shown_ else "<p>Every group passes every criterion.</p>")
    if len(bad) > len(shown_):
        out.append(f"<p class=muted>{len(bad) - len(shown_)} more below in the per-group table.</p>")
    for model in _models(runs):
        mine = [f for f in found if f.model == model and f.criterion != "speed" and not is_1n_criterion(f.criterion)]
        if mine:
            out.append(f"<h3>{e(model)}: per group (NISTIR 8280 presentation: the rate as a multiple of the "
                       "target, its interval and counts)</h3>" + html_table(
                           ["board", "precision", "group", "criterion", "verdict", "figure [95% CI]", "counts",
                            "test"], [[f.board, f.variant, f.group, f.criterion, f.verdict, f.value, f.counts, f.test]
                                      for f in sorted(mine, key=lambda f: (f.board, f.variant, f.criterion, f.group))]))
    return "".join(out)


MAX_FINDINGS = 40


# ---- verification precision loss at the fp32 threshold ------------------------------------------------------------
def paired_section(runs: Sequence[Run], model: str) -> str:
    rows = []
    for run, entry, _ in _cells(runs, model):
        for r in paired_rate_rows(entry):
            rows.append([_board(run), _precision(entry)] + paired_rate_cells(r)
                        + ["*" if r.get("small") else ""])
    if not rows:
        return ""
    return html_table(["board", "precision", *PAIRED_HEADERS, "small"], rows)


# ---- the data set ---------------------------------------------------------------------------------------------------
def _card_facts(root: str | None) -> dict[str, str]:
    """Label provenance, capture conditions and licence from the data set's card (card.toml / card.json keys
    `labels`, `capture`, `licence`) or its README (the lines that say so), read where the run's data root is
    readable on this machine. Text from those files is data: escaped where printed, never interpreted."""
    facts: dict[str, str] = {}
    if not root:
        return facts
    base = Path(root)
    try:
        for name in ("card.toml", "card.json"):
            path = base / name
            if path.is_file():
                import json

                card = (tomllib.loads(path.read_text("utf-8")) if name.endswith(".toml")
                        else json.loads(path.read_text("utf-8")))
                facts.update({k: str(card[k]) for k in ("labels", "capture", "licence") if k in card})
        readme = base / "README.md"
        if readme.is_file():
            lines = [ln.strip(" -#") for ln in readme.read_text("utf-8", "replace").splitlines()]
            pick = {"licence": ("licence:", "license:"), "labels": ("self-reported", "annotated", "labels ("),
                    "capture": ("studio", "in the wild", "capture", "session")}
            for key, words in pick.items():
                if key not in facts:
                    hit = next((ln for ln in lines if any(w in ln.lower() for w in words)), None)
                    if hit:
                        facts[key] = hit[:400]
    except (OSError, ValueError, UnicodeDecodeError):
        return facts
    return facts


def dataset_section(runs: Sequence[Run], policy: ProcurementPolicy) -> str:
    """Per data set the runs scored: size, people, images per person, groups with people and images, where the
    labels came from, capture and licence; then per group the sample size a decision at the policy's target
    would need against what was measured."""
    from harness.report.procurement import needed_samples, needed_subject_pairs

    out = []
    seen: set[tuple[str, str | None]] = set()
    for run in runs:
        for ds in (run.doc.get("data") or {}).get("datasets", []):
            key = (ds.get("id"), ds.get("manifest_sha256"))
            if key in seen:
                continue
            seen.add(key)
            ok = [x for x in run.entries if x.get("status") == "ok"]
            # a verification entry when there is one: its samples are read for the curves anyway
            entry = next((x for x in ok if x.get("task") == "verification"), ok[0] if ok else None)
            if entry is None:
                continue
            df = _samples(run, entry["entry"])
            df = df[df["dataset"] == ds.get("id")] if "dataset" in df else df
            gb = [c for c in (ds.get("default_group_by") or []) if c in df]
            people = df["subject"].nunique() if "subject" in df else None
            per = df.groupby("subject").size() if "subject" in df else None
            facts = _card_facts(ds.get("root"))
            not_rec = "not recorded in the data set's card or README (or its folder is not readable here)"
            out.append(f"<h3>{e(ds.get('id'))}</h3>" + html_table(["fact", "value"], [
                ["images scored", f"{ds.get('n_evaluated', len(df))} of {ds.get('n', '-')}"],
                ["people", fmt(people, "d", "no subject ids")],
                ["images per person", "no subject ids" if per is None else
                 f"{per.mean():.1f} (min {per.min()}, max {per.max()})"],
                ["grouped by", " × ".join(gb) or "no group columns"],
                ["labels", facts.get("labels", not_rec)], ["capture", facts.get("capture", not_rec)],
                ["licence", facts.get("licence", not_rec)],
                ["manifest sha256", ds.get("manifest_sha256") or "not recorded"]]))
            if not gb:
                continue
            groups = df.assign(_g=group_labels(df, gb, "the buyer's page")[1])
            need_pairs = needed_subject_pairs(policy.target_fmr)
            floor = min(policy.floor.values()) if policy.floor else None
            rows = []
            for g, part in groups.groupby("_g", sort=True):
                s_ = part["subject"].nunique() if "subject" in part else None
                pairs = None if s_ is None else s_ * (s_ - 1) // 2
                need_people = math.ceil((1 + math.sqrt(1 + 8 * need_pairs)) / 2)
                rows.append([g, fmt(s_, "d", "no subject ids"), len(part), fmt(pairs, "d", "-"),
                             f"{need_pairs} subject pairs (about {need_people} people)",
                             ("enough" if pairs is not None and pairs >= need_pairs else
                              f"short by {need_pairs - (pairs or 0)} subject pairs"),
                             (f"{needed_samples(0.95, floor)} per group at an observed 0.95" if floor is not None
                              and needed_samples(0.95, floor) else "no floor stated")])
            out.append(html_table(["group", "people", "images", "same-group subject pairs",
                                   f"needed for FMR ≤ {policy.target_fmr:g} at zero errors (rule of three)",
                                   "measured vs needed", "needed for the accuracy floor"], rows,
                                  [False, True, True, True, False, False, False]))
    return "".join(out) + buyers_1n.dataset_part(runs, policy)


# ---- the system ---------------------------------------------------------------------------------------------------
def _kernel(env: dict[str, Any]) -> str:
    """The CPU's kernel-relevant features from the fingerprint's kernel_path block (branch fingerprint), or why
    not. Values are data from the board: printed as text, only known shapes read."""
    kp = env.get("kernel_path")
    if not isinstance(kp, dict):
        return "not recorded"
    feats = kp.get("features")
    have = sorted(str(k) for k, v in feats.items() if v is True) if isinstance(feats, dict) else []
    path = kp.get("int8_label") or kp.get("int8") or "unknown"
    return f"int8 path {path}; features: {', '.join(have) or 'none recorded'}"


def system_section(runs: Sequence[Run]) -> str:
    """One row per board, as MLPerf's results tables describe a system, from each run's fingerprint."""
    rows = []
    for run in runs:
        doc = run.doc
        env = doc.get("device_environment") or doc.get("environment") or {}
        cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
        dev = env.get("device") if isinstance(env.get("device"), dict) else {}
        backends = [x.get("backend") or {} for x in run.entries if isinstance(x.get("backend"), dict)]
        runtimes = sorted({f"{b.get('runtime')} {b.get('version', '')}".strip() for b in backends if b.get("runtime")})
        active = sorted({a for b in backends for a in (b.get("active") or []) if isinstance(a, str)})
        threads = sorted({str(((x.get("speed") or {}).get("offline") or {}).get("threads"))
                          for x in run.entries if ((x.get("speed") or {}).get("offline") or {}).get("threads")})
        settings = doc.get("settings") or {}
        kind, why = provenance(run)
        model = dev.get("model") if dev.get("model") not in (None, "unknown") else None
        accel = [a for a in active if a not in ("CPUExecutionProvider", "cpu", "XNNPACK", "xnnpack")]
        rows.append([
            _board(run), f"{kind}: {why}", model or "not recorded (no device-tree model)",
            f"{cpu.get('model', 'not recorded')} ({cpu.get('arch', '?')}, {cpu.get('cores_logical', '?')} logical "
            "cores)", _kernel(env),
            ", ".join(accel) or "none used (CPU only)", ", ".join(runtimes) or "not recorded",
            ", ".join(active) or "not recorded",
            ", ".join(threads) or str(settings.get("threads") or "runtime default"),
            str(env.get("power_mode") or dev.get("power_mode") or "not recorded"),
            str(env.get("cooling") or "not recorded")])
    return html_table(["board", "provenance", "device", "CPU", "kernel-relevant CPU features", "accelerator",
                       "runtime and version", "provider / delegate", "threads", "power mode", "cooling"], rows)


def checksum_warnings(runs: Sequence[Run]) -> str:
    """Model and data checksum mismatches (and the other environment differences) between boards, worded as
    `bench compare` words them (harness.report.compare.environment_warnings)."""
    from harness.report.compare import environment_warnings

    return "".join(f'<div class="warn">{e(w)}</div>' for w in environment_warnings(runs))


def render(runs: Sequence[Run], *, store_uri: str | None = None, trends: Sequence[tuple[str, list]] = (),
           policy: ProcurementPolicy | None = None) -> str:
    """The whole procurement page for `runs` (one per board); `trends`: (metric, [trend.Series]) to chart;
    `policy`: the buyer's (examples/procurement.toml), else DEFAULT_POLICY (target FMR 1e-3, 99% retention)."""
    policy = policy or DEFAULT_POLICY
    _SAMPLES.clear()
    _SUMMARIES.clear()
    boards = [_board(r) for r in runs]
    marked = [f"{_board(r)}: {provenance(r)[1]}" for r in runs if provenance(r)[0] != "real"]
    body = [f"<p class=muted>{len(runs)} board(s): {e(', '.join(boards))}. Generated "
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
            + (f" from {e(store_uri)}" if store_uri else "") + ". Rates to three significant digits with 95% "
            "intervals; '*' marks a rate on fewer than 30 subjects or subject pairs (too few to decide on).</p>"]
    body += [f'<div class="warn">{e(m)}</div>' for m in marked]
    body.append("<h2 id=decision>Decision against the stated policy</h2>" + decision_section(runs, policy))
    body.append("<h2 id=verdicts>Verdicts</h2><p class=muted>Per board, each precision against fp32 on the same "
                "board: speed, then the group that moves most, judged by the paired test over the same samples.</p>")
    for board, lines in verdicts(runs).items():
        body.append(f"<h3>{e(board)}</h3><ul class=verdict>" + "".join(f"<li>{e(x)}</li>" for x in lines)
                    + "</ul>" if lines else f"<h3>{e(board)}</h3><p class=muted>fp32 only: nothing to compare.</p>")
    body.append("<h2 id=dataset>The data set</h2>" + dataset_section(runs, policy))
    body.append("<h2 id=system>The systems</h2>" + system_section(runs) + checksum_warnings(runs))
    body.append("<h2 id=boards>Boards x precision</h2><p class=muted>x target: the worst group's same-group FMR "
                "as a multiple of the target FMR the fp32 threshold was tuned for; n: the subjects the worst "
                "group's interval rests on (and the pairs compared).</p>")
    for model in _models(runs):
        metric = next((f"{s.metric} on {s.dataset}" for *_, s in _cells(runs, model) if s.metric), "")
        body.append(f"<h3>{e(model)}: worst group by {e(metric)}</h3>" + board_table(runs, model))
    paired = [(m, paired_section(runs, m)) for m in _models(runs)]
    transfer = [(m, transfer_table(runs, m)) for m in _models(runs)]
    if any(t for _, t in transfer) or any(t for _, t in paired):
        body.append("<h2 id=transfer>Precision loss at the fp32 threshold, per group</h2>"
                    f"<p class=muted>{e(PAIRED_NOTE)}</p>" + "".join(f"<h3>{e(m)}</h3>{t}" for m, t in paired if t)
                    + "<h3>FMR / FNMR per group at the fp32 threshold (marginal)</h3>"
                    + "".join(f"<h4>{e(m)}</h4>{t}" for m, t in transfer if t))
    body.append("<h2 id=identification>Identification (1:N)</h2>" + buyers_1n.section(runs, policy))
    body.append("<h2 id=pareto>Speed against worst-group error</h2><p class=muted>Both axes log: an error of "
                "0.001 and one of 0.003 are a factor of three apart. A zero error sits on the floor.</p>")
    body += [f"<div class=chart>{svg}</div>" for m in _models(runs) if (svg := pareto_chart(runs, m))]
    det = "".join(det_section(runs, m) for m in _models(runs))
    if det:
        body.append("<h2 id=det>DET curves and vendor cut-offs</h2><p class=muted>FNMR against FMR per group, both "
                    "log (NIST FRVT), one panel per precision; each group keeps its colour and dash in every "
                    "panel. A rate of 0 is drawn on the axis edge.</p>" + det)
    camera_curves = camera_section(runs)
    if camera_curves:
        body.append("<h2 id=camera>The camera: each group under capture conditions</h2><p class=muted>Each "
                    "group's error at each level of a capture condition (bench run --condition, docs/camera.md), "
                    "with its 95% interval (Wilson over the faces acquired; FMR and FNMR subject-weighted with "
                    f"subject-bootstrap intervals, at the unmodified run's fp32 threshold), log axis from "
                    f"{CAMERA_FLOOR:g}; one panel per precision; each group keeps its colour and dash in every "
                    "panel, all groups together in black. A rate of 0 sits on the floor. Which level first differs "
                    "and whether int8 and the condition compound: bench report with the same runs.</p>"
                    + camera_curves)
    if trends:
        body.append("<h2 id=trends>Nightly trends</h2>" + "".join(trend_charts(s, m) for m, s in trends if s))
    body.append("<h2 id=provenance>Provenance</h2>" + html_table(
        ["board", "provenance", "run", "created (UTC)", "commit", "status"],
        [[_board(r), provenance(r)[1], r.run_id, r.doc.get("created_utc"),
          (((r.doc.get("environment") or {}).get("git") or {}).get("commit") or "-")[:10], r.doc.get("status")]
         for r in runs]))
    _SAMPLES.clear()
    _SUMMARIES.clear()
    return _page("Which board, at which precision, costs whom what", "".join(body))
