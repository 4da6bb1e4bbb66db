"""The report's "Identification (1:N)" section: each run's watchlist searches (harness/watchlist.py) per dataset.

Per entry and search configuration (its own watchlist; the fp32 watchlist searched by the variant's probes), per
probe group: FPIR and FNIR at every threshold and the rank-1/rank-10 hit rates, each cell "value [95% interval]
errors/searches" (subject-weighted value and subject-level interval, docs/metrics.md "Identification"); the
variant's decisions against fp32 both ways (flips b/c with the exact McNemar p); FNIR and FPIR at the tuned
threshold as grouped bars with their intervals; FPIR against gallery size, measured on nested galleries with
intervals and the independent-comparisons model drawn and tabled apart from it; the search itself timed on the
board, per gallery size beside the entry's inference p50, with its validity (harness/report/search_speed.py).
Definitions follow NIST FRVT 1:N (NISTIR 8271 sec. 3) per group as in NISTIR 8280.

Every string from a run (group names, entry and dataset ids, reasons) is escaped by
harness.report.html.e / html_table, and chart text is text in the SVG (matplotlib escapes it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.metrics.identification import NO_SEARCHES
from harness.report import charts
from harness.report.search_speed import NOTE as SEARCH_NOTE
from harness.report.search_speed import SEARCH_SPEED_HEADERS, SEARCH_SPEED_NUMERIC, fidelity_line, search_speed_cells
from harness.report.summary import fmt_ci, fmt_rate, fmt_rate_row
from harness.results.rows import IDENT_CONFIGS, identification_sections
from harness.results.store import Run

NOTE = ("1:N watchlist search per probe group (NIST FRVT 1:N, NISTIR 8271 sec. 3; NISTIR 8280): FPIR = share of "
        "non-mated searches (the person is not enrolled) returning any candidate at or above the threshold; FNIR = "
        "share of mated searches whose mate is not returned at or above it within rank R; rank-1 / rank-10 = share "
        "of mated searches whose mate ranks first / within ten, whatever its score. Each cell: subject-weighted "
        "value [95% interval over people] errors/searches (hits/searches for the hit rates); people = enrolled + "
        "held out.")
FLIP_NOTE = ("Decisions of this variant against the fp32 reference on the same searches, at the reference's "
             "thresholds: b = searches fp32 decided right and the variant wrong (a false candidate gained, or a "
             "mate lost), c = the reverse; exact McNemar p. Rows: every group overall, then the groups with at "
             "least one flip (the others have b = c = 0, p = 1; all rows are in `bench export`).")
SIZE_NOTE = ("FPIR against gallery size at the {kind} threshold {value}: measured on nested prefixes of one seeded "
             "gallery order (with intervals and counts), and beyond the data the independent-comparisons model "
             "FPIR(N) = 1 - (1 - p_t)^N from the group's measured non-mate comparisons at or above t (a model, not a "
             "measurement: its error can be read beside the measurement at the measured size). Zero rates are drawn "
             "on the chart's floor. Other thresholds and the fp32-watchlist configuration: `bench export`.")
EMPTY = ("<p>No identification rows in these runs (they come from a watchlist dataset such as london-frl-views "
         "with an embedding model).</p>")
_SEARCH = {"fpir": "non-mated (FPIR)", "fnir": "mated (FNIR)"}


def config_label(config: str, entry: Mapping[str, Any]) -> str:
    variant = entry.get("variant", "")
    if config == "reference_gallery":
        return f"fp32 watchlist searched by {variant} probes"
    return f"its own watchlist (all {variant})"


def cell(row: Mapping[str, Any] | None) -> str:
    """'value [lo, hi] k/n' of a rate row; 'not computable: why', or for a group with no row (e.g. a group with
    no held-out person has no non-mated search) 'no searches of this kind'."""
    if row is None:
        return NO_SEARCHES
    if row.get("value") is None:
        return fmt_rate_row(row)
    return f"{fmt_rate(row['value'])} {fmt_ci(row)} {row.get('k')}/{row.get('n')}"


def threshold_label(t: Mapping[str, Any]) -> str:
    return f"{t['kind']} {t['value']:.3f}"


def _threshold_text(t: Mapping[str, Any]) -> str:
    why = {"tuned_fpir": f"tuned on fp32 for FPIR {t.get('target_fpir')}",
           "verification_1to1": f"the fp32 1:1 threshold for FMR {t.get('target_fmr')}",
           "fixed": "fixed cut-off"}.get(t["kind"], t["kind"])
    return f"{t['value']:.3f} ({why})"


def _find(rows: Sequence[Mapping[str, Any]], metric: str, group: str, threshold: float | None):
    return next((r for r in rows if r["metric"] == metric and r["group"] == group
                 and r.get("threshold") == threshold), None)


def rate_table(part: Mapping[str, Any], thresholds: Sequence[Mapping[str, Any]], rank_k: int):
    """(headers, rows) of one configuration: per probe group FPIR and FNIR at each threshold, rank-1, rank-k."""
    rows = part.get("rates") or []
    groups = list(dict.fromkeys(r["group"] for r in rows))
    head = ["group (probe)", "people"] + [f"{m.upper()} @ {threshold_label(t)}" for t in thresholds
                                          for m in ("fpir", "fnir")] + ["rank-1 hit", f"rank-{rank_k} hit"]
    body = []
    for g in groups:
        people = {m: next((r.get("n_subjects") for r in rows if r["metric"] == m and r["group"] == g), 0) or 0
                  for m in ("fnir", "fpir")}
        cells = [g, f"{people['fnir']} + {people['fpir']}"]
        cells += [cell(_find(rows, m, g, t["value"])) for t in thresholds for m in ("fpir", "fnir")]
        cells += [cell(_find(rows, "rank1_hit", g, None)), cell(_find(rows, f"rank{rank_k}_hit", g, None))]
        body.append(cells)
    return head, body


FLIP_HEADERS = ("watchlist", "threshold", "searches", "group (probe)", "n", "b: fp32 right only",
                "c: variant right only", "McNemar p")


def flip_rows(section: Mapping[str, Any], entry: Mapping[str, Any]) -> list[list[Any]]:
    out = []
    for r in section.get("flips") or []:
        if r["group"] != "all" and not r.get("flips"):
            continue
        out.append([config_label(r["config"], entry), f"{r['threshold_kind']} {r['threshold']:.3f}",
                    _SEARCH.get(r["metric"], r["metric"]), r["group"], r["n"], r["b"], r["c"],
                    format(r["p_value"], ".2g")])
    return out


def _bars(dataset: str, items: list[tuple[str, Mapping[str, Any]]], metric: str, t: Mapping[str, Any]) -> str:
    """Grouped bars of `metric` at threshold t: one cluster per probe group, one bar per entry x configuration."""
    groups = list(dict.fromkeys(r["group"] for _, part in items for r in part.get("rates") or []
                                if r["metric"] == metric))
    series = []
    for label, part in items:
        rows = {r["group"]: r for r in part.get("rates") or []
                if r["metric"] == metric and r.get("threshold") == t["value"]}
        series.append((label, [rows.get(g, {}).get("value") for g in groups],
                       [(rows.get(g, {}).get("ci_lo"), rows.get(g, {}).get("ci_hi")) for g in groups]))
    title = f"{dataset}: {metric.upper()} by probe group at {threshold_label(t)} (lower is better)"
    return charts.group_bars(title, groups, series, metric.upper())


def size_table(part: Mapping[str, Any], t: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = (gallery size, measured | model), columns = probe groups, at threshold t."""
    measured = [r for r in part.get("fpir_by_gallery_size") or [] if r.get("threshold") == t["value"]]
    model = [r for r in part.get("fpir_by_gallery_size_model") or [] if r.get("threshold") == t["value"]]
    groups = list(dict.fromkeys(r["group"] for r in measured + model))
    body = []
    for kind, rows in (("measured", measured), ("model", model)):
        for size in sorted({r["gallery_size"] for r in rows}):
            at = {r["group"]: r for r in rows if r["gallery_size"] == size}
            cells = [f"{size:,}", kind]
            for g in groups:
                r = at.get(g)
                if r is None:
                    cells.append("-")
                elif kind == "measured":
                    cells.append(cell(r))
                else:
                    cells.append(f"{fmt_rate(r['value'])} (p_t {r['k_comparisons']}/{r['n_comparisons']} comparisons)")
            body.append(cells)
    return ["gallery size", "kind"] + groups, body


def _size_chart(title: str, part: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    measured, model = {}, {}
    for r in part.get("fpir_by_gallery_size") or []:
        if r.get("threshold") == t["value"]:
            measured.setdefault(r["group"], []).append((r["gallery_size"], r.get("value"), r.get("ci_lo"),
                                                        r.get("ci_hi")))
    for r in part.get("fpir_by_gallery_size_model") or []:
        if r.get("threshold") == t["value"]:
            model.setdefault(r["group"], []).append((r["gallery_size"], r.get("value")))
    # a group with no non-mated search (every row "not computable") has nothing to draw; its table row says why
    groups = [g for g in dict.fromkeys(list(measured) + list(model))
              if any(p[1] is not None for p in measured.get(g, []) + model.get(g, []))]
    return charts.fpir_gallery_size(title, [(g, sorted(measured.get(g, [])), sorted(model.get(g, [])))
                                            for g in groups])


def markdown_parts(runs: Sequence[Run]) -> list[str]:
    """The Markdown report's identification tables: per run, entry, dataset and configuration, the rate table;
    then the flips (md_table escapes every cell)."""
    from harness.report.tables import md_cell, md_table

    parts: list[str] = []
    for run in runs:
        for x in run.entries:
            for dataset, s in identification_sections(x):
                for config in IDENT_CONFIGS:
                    part = s.get(config)
                    if isinstance(part, Mapping):
                        head, body = rate_table(part, s.get("thresholds") or [], s.get("rank_k", 10))
                        parts += [f"## {x['entry']} @ {run.target} ({run.run_id}): identification (1:N) on "
                                  f"{dataset}, {config_label(config, x)}", "", NOTE, "", md_table(head, body), ""]
                flips = flip_rows(s, x)
                if flips:
                    parts += [f"### {x['entry']} @ {run.target}: decisions against fp32 on {dataset}", "", FLIP_NOTE,
                              "", md_table(list(FLIP_HEADERS), flips), ""]
                speed = search_rows(x, dataset)
                if speed:
                    parts += [f"### {x['entry']} @ {run.target}: search latency on the board, {dataset}", "",
                              SEARCH_NOTE, "", md_table(list(SEARCH_SPEED_HEADERS), speed), ""]
                    fid = fidelity_line(x, dataset)
                    parts += [md_cell(fid), ""] if fid else []
    return parts


def search_rows(entry: Mapping[str, Any], dataset: str) -> list[list[str]]:
    """The entry's on-board search latency rows for one watchlist dataset (harness/report/search_speed.py)."""
    return [cells for ds, cells in search_speed_cells(entry) if ds == dataset]


def html_section(runs: Sequence[Run]) -> str:
    from harness.report.html import e, html_table

    parts = []
    for run in runs:
        datasets = list(dict.fromkeys(d for x in run.entries
                                      for d in ((x.get("metrics") or {}).get("identification") or {})))
        for dataset in datasets:
            entries = [(x, ((x.get("metrics") or {}).get("identification") or {}).get(dataset)) for x in run.entries]
            entries = [(x, s) for x, s in entries if isinstance(s, Mapping)]
            parts.append(f"<h3>{e(dataset)}, run {e(run.run_id)} @ {e(run.target)}</h3>")
            computed = [(x, s) for x, s in entries if "status" not in s]
            for x, s in entries:
                if "status" in s:
                    parts.append(f'<div class="warn">{e(x["entry"])}: {e(s["status"])}: {e(s.get("reason"))}</div>')
            if not computed:
                continue
            first = computed[0][1]
            split = first.get("split") or {}
            thresholds = first.get("thresholds") or []
            ref = first.get("reference") or {}
            parts.append("<p>" + e(
                f"Watchlist: {first.get('n_gallery')} templates ({split.get('n_gallery')} enrolled people, "
                f"{first.get('n_distractors')} distractor faces from {(split.get('rules') or {}).get('distractors')}); "
                f"{split.get('n_mated_probes')} mated and {split.get('n_nonmated_probes')} non-mated searches; "
                f"FNIR at rank {first.get('rank_r')}; {first.get('n_not_enrolled')} probes of people not enrolled "
                f"left out. Reference: {ref.get('entry')} of run {ref.get('run')}. Thresholds: "
                + "; ".join(_threshold_text(t) for t in thresholds) + ".") + "</p>")
            for x, s in computed:
                for config in IDENT_CONFIGS:
                    part = s.get(config)
                    if not isinstance(part, Mapping):
                        continue
                    head, body = rate_table(part, s.get("thresholds") or [], s.get("rank_k", 10))
                    size = f", {s.get('n_gallery')} templates" if config == "own_gallery" else ""
                    parts.append(f"<h4>{e(x['entry'])}: {e(config_label(config, x))}{e(size)}</h4>"
                                 f'<div class="nowrap">{html_table(head, body, [False] + [True] * (len(head) - 1))}'
                                 "</div>")
                flips = flip_rows(s, x)
                if flips:
                    parts.append(f"<h4>{e(x['entry'])}: decisions against fp32, both ways</h4><p>{e(FLIP_NOTE)}</p>"
                                 + html_table(FLIP_HEADERS, flips, [False] * 4 + [True] * 4))
                speed = search_rows(x, dataset)
                if speed:
                    parts.append(f"<h4>{e(x['entry'])}: search latency on the board</h4><p>{e(SEARCH_NOTE)}</p>"
                                 '<div class="nowrap">' + html_table(SEARCH_SPEED_HEADERS, speed,
                                                                     list(SEARCH_SPEED_NUMERIC))
                                 + "</div>")
                    fid = fidelity_line(x, dataset)
                    if fid:
                        parts.append(f"<p>{e(fid)}</p>")
            if thresholds:
                t = thresholds[0]
                items = [(f"{x['variant']}: {config_label(c, x)}", s[c]) for x, s in computed for c in IDENT_CONFIGS
                         if isinstance(s.get(c), Mapping)]
                for metric in ("fnir", "fpir"):
                    parts.append(f'<div class="chart">{_bars(dataset, items, metric, t)}</div>')
                parts.append(f"<p>{e(SIZE_NOTE.format(kind=t['kind'], value=format(t['value'], '.3f')))}</p>")
                for x, s in computed:
                    part = s.get("own_gallery")
                    if not isinstance(part, Mapping):
                        continue
                    title = f"{x['entry']} ({config_label('own_gallery', x)}): FPIR against gallery size"
                    head, body = size_table(part, t)
                    parts.append(f"<h4>{e(title)}</h4>"
                                 f'<div class="chart">{_size_chart(title, part, t)}</div><div class="nowrap">'
                                 + html_table(head, body, [True, False] + [True] * (len(head) - 2)) + "</div>")
    if not parts:
        return EMPTY
    return f"<p>{e(NOTE)}</p>" + "".join(parts)
