"""The buyer's page's "Identification (1:N)" section (`bench report --devices`, docs/buyers.md): the watchlist
search judged against the policy's `[identification]` part (harness/report/procurement_1n.py).

Per board x precision: the worst probe group by FPIR at the fp32-tuned threshold ("tied within intervals" when
another group's interval overlaps it, as the 1:1 verdicts say it), its FPIR as a multiple of the target with its
interval, people and searches, the worst FNIR, the paired loss against fp32 both ways, the search p90 at the
policy's gallery size, and the verdicts; then every per-group verdict; FPIR against gallery size (log axes, one
panel per precision, one line per probe group, Okabe-Ito colours with dashes: harness/report/charts.py); who the
false candidates are (their group against the probe's); and in the data-set part, the non-mated people a zero-count
FPIR decision needs (rule of three) against those measured. Every blank cell says why. Reads only the rows
harness/watchlist.py wrote; every string from a run is escaped (html_table / e).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.report import charts
from harness.report.html import e, html_table
from harness.report.procurement import (
    FAIL, PASS, UNSURE, Finding, ProcurementPolicy, needed_zero_count_units, ranked,
)
from harness.report.procurement_1n import (
    DEPLOYED, READINGS, TUNED, identification_findings, is_1n_criterion, rows_at, tuned_threshold,
)
from harness.report.summary import MIN_WORST_N, fmt_rate, tied_with_worst
from harness.results.rows import identification_sections, search_speed_records
from harness.results.store import Run

NO_ENTRIES = "no identification entries in this run"
NO_SEARCH = "search not timed on this board"
NO_FNIR = "no FNIR ceiling in the policy"
NO_SPEED = "no search speed floor in the policy"
REFERENCE = "reference (fp32)"


def _board(run: Run) -> str:
    from harness.results.provenance import board

    return board(run.doc)


def _ci(row: Mapping[str, Any]) -> str:
    if row.get("ci_lo") is None or row.get("ci_hi") is None:
        return ""
    return f" [{fmt_rate(row['ci_lo'])}, {fmt_rate(row['ci_hi'])}]"


def _people(row: Mapping[str, Any], kind: str) -> str:
    """Subjects and searches, as the 1:1 verdicts print subjects and pairs."""
    n = row.get("n_subjects")
    return f"{n} {'person' if n == 1 else 'people'}, {row.get('n')} {kind} searches"


def _entries(run: Run) -> list[tuple[dict[str, Any], str, Mapping[str, Any]]]:
    """(entry, dataset, section) of every computed watchlist section of the run's entries."""
    return [(x, ds, sec) for x in run.entries for ds, sec in identification_sections(x)]


def _not_computable(run: Run) -> list[str]:
    return [f"{x['entry']} on {ds}: {sec.get('status')}: {sec.get('reason')}" for x in run.entries
            for ds, sec in sorted(((x.get("metrics") or {}).get("identification") or {}).items())
            if isinstance(sec, Mapping) and "status" in sec]


def worst_group(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The probe group with the highest error rate (FPIR or FNIR) among groups of at least MIN_WORST_N searches
    (all groups when none is that large), as harness.report.summary.worst_group picks a 1:1 group."""
    groups = [r for r in rows if r.get("group") != "all" and r.get("value") is not None]
    big = [r for r in groups if (r.get("n") or 0) >= MIN_WORST_N] or groups
    return max(big, key=lambda r: (r["value"], r.get("n") or 0)) if big else None


def _worst(rows: list[dict[str, Any]]) -> str:
    w = worst_group(rows)
    if w is None:
        return "no group rates"
    if w["value"] == 0:  # no group to name: every one is at zero (each interval is in the per-group table)
        return "none: 0 in every probe group"
    tied = tied_with_worst(rows, w)
    small = "*" if w.get("small") else ""
    name = w["group"] + ((f" (tied within intervals with {', '.join(t['group'] for t in tied)})" if len(tied) <= 2
                          else f" (tied within intervals with {len(tied)} groups)") if tied else "")
    return f"{name}: {fmt_rate(w['value'])}{small}{_ci(w)}"


def _verdict_of(found: list[Finding], criterion: str) -> str:
    mine = [f for f in found if f.criterion.startswith(criterion)]
    if not mine:
        return ""
    counts = {v: sum(f.verdict == v for f in mine) for v in (FAIL, UNSURE, PASS)}
    return "; ".join(f"{n} {v}" for v, n in counts.items() if n)


def _loss_cell(sec: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
    """The flips of all probe groups together at the tuned threshold, both readings."""
    if not sec.get("flips"):
        return REFERENCE if entry["entry"] == (sec.get("reference") or {}).get("entry") else "no flips recorded"
    out = []
    for config in READINGS:
        for metric in ("fpir", "fnir"):
            f = next((r for r in sec["flips"] if r.get("config") == config and r.get("metric") == metric
                      and r.get("group") == "all" and r.get("threshold_kind") == TUNED), None)
            if f is not None:
                out.append(f"{READINGS[config].format(v=entry['variant'])}: {metric.upper()} b {f['b']} / c {f['c']} "
                           f"of {f['n']}, McNemar p = {f['p_value']:.2g}")
    return "; ".join(out) or "no flips recorded at the tuned threshold"


def _search_cell(entry: Mapping[str, Any], dataset: str) -> str:
    """The search's p90 at every gallery size timed on the board, with its validity, or why there is none."""
    records = [r for r in search_speed_records(entry) if r.get("dataset") == dataset]
    timed = [r for r in records if r.get("gallery_size") and r.get("p90_ms") is not None]
    if timed:
        return "; ".join(f"p90 {r['p90_ms']:.4g} ms at {r['gallery_size']:,} ({r.get('validity')})" for r in timed)
    failed = [r for r in records if r.get("status") != "ok"]
    return f"search {failed[0].get('status')}: {failed[0].get('reason')}" if failed else NO_SEARCH


def summary_table(runs: Sequence[Run], policy: ProcurementPolicy, found: list[Finding]) -> str:
    ip = policy.identification
    head = ["board", "precision", "watchlist", "worst probe group by FPIR at the tuned threshold [95% CI]",
            "x target", "people and searches", "worst probe group by FNIR [95% CI]", "paired loss vs fp32 (all groups)",
            "search p90 on the board", "FPIR target", "FNIR ceiling", "loss vs fp32", "search speed"]
    rows = []
    for run in runs:
        board = _board(run)
        for entry, dataset, sec in _entries(run):
            t = tuned_threshold(sec)
            if t is None:
                rows.append([board, entry["variant"], dataset] + ["no threshold tuned for a target FPIR"]
                            * (len(head) - 3))
                continue
            fpir = rows_at(sec.get(DEPLOYED), "fpir", t["value"])
            fnir = rows_at(sec.get(DEPLOYED), "fnir", t["value"])
            w = worst_group(fpir)
            target = ip.target_fpir if ip else None
            f = [x for x in found if x.board == board and x.model == entry["model"] and x.variant == entry["variant"]]
            rows.append([
                board, entry["variant"], f"{dataset}: {sec.get('n_gallery')} templates ({sec.get('n_distractors')} "
                f"distractors), threshold {t['value']:.3f} tuned on fp32 for FPIR {t.get('target_fpir')}",
                _worst(fpir),
                "-" if w is None or target is None else f"{w['value'] / target:.2f}x {target:g}",
                "-" if w is None else _people(w, "non-mated"),
                _worst(fnir), _loss_cell(sec, entry), _search_cell(entry, dataset),
                _verdict_of(f, "1:N FPIR target") or "no FPIR rates",
                _verdict_of(f, "1:N FNIR ceiling") or NO_FNIR,
                "; ".join(f"{m}: {v}" for m in ("FPIR", "FNIR") if (v := _verdict_of(f, f"1:N {m} loss")))
                or (_loss_cell(sec, entry) if not sec.get("flips") else "no retention rule in the policy"),
                _verdict_of(f, "search speed") or (NO_SPEED if not (ip and ip.max_search_p90_ms) else NO_SEARCH)])
    return html_table(head, rows) if rows else ""


def findings_table(found: list[Finding]) -> str:
    mine = sorted((f for f in found if is_1n_criterion(f.criterion)),
                  key=lambda f: (f.board, f.model, f.variant, f.criterion, f.group))
    if not mine:
        return ""
    return html_table(["board", "precision", "probe group", "criterion", "verdict", "figure [95% CI]", "counts",
                       "test"], [[f.board, f.variant, f.group, f.criterion, f.verdict, f.value, f.counts, f.test]
                                 for f in mine])


def size_chart(run: Run) -> str:
    """One chart per board: FPIR against gallery size at the tuned threshold, one panel per precision."""
    panels = []
    for entry, dataset, sec in _entries(run):
        t = tuned_threshold(sec)
        part = sec.get(DEPLOYED) or {}
        if t is None:
            continue
        measured: dict[str, list] = {}
        model: dict[str, list] = {}
        for r in part.get("fpir_by_gallery_size") or []:
            if r.get("threshold") == t["value"] and r.get("group") != "all":
                measured.setdefault(r["group"], []).append((r["gallery_size"], r.get("value"), r.get("ci_lo"),
                                                            r.get("ci_hi")))
        for r in part.get("fpir_by_gallery_size_model") or []:
            if r.get("threshold") == t["value"] and r.get("group") != "all":
                model.setdefault(r["group"], []).append((r["gallery_size"], r.get("value")))
        groups = [g for g in dict.fromkeys(list(measured) + list(model))
                  if any(p[1] is not None for p in measured.get(g, []) + model.get(g, []))]
        if groups:
            label = entry["variant"] + (f" on {dataset}" if len({d for _, d, _ in _entries(run)}) > 1 else "")
            panels.append((label, [(g, sorted(measured.get(g, [])), sorted(model.get(g, []))) for g in groups]))
    if not panels:
        return ""
    return charts.fpir_size_facets(f"{_board(run)}: FPIR against gallery size at the fp32-tuned threshold, "
                                   "one panel per precision", panels)


def false_candidates_table(runs: Sequence[Run]) -> str:
    """Per board x precision x probe group: the groups of the rank-1 false candidates of its non-mated searches at
    the tuned threshold (all-variant system), with counts."""
    rows = []
    for run in runs:
        for entry, dataset, sec in _entries(run):
            t = tuned_threshold(sec)
            if t is None:
                continue
            fc = [r for r in (sec.get(DEPLOYED) or {}).get("false_candidates") or []
                  if r.get("threshold") == t["value"]]
            searches = {r["group"]: r for r in rows_at(sec.get(DEPLOYED), "fpir", t["value"]) if r["group"] != "all"}
            for g in dict.fromkeys([*searches, *(r["probe_group"] for r in fc)]):
                mine = sorted((r for r in fc if r["probe_group"] == g), key=lambda r: (-r["n_false"],
                                                                                      str(r["candidate_group"])))
                n = next((r.get("n_searches") for r in mine), (searches.get(g) or {}).get("n"))
                same = sum(r["n_false"] for r in mine if str(r["candidate_group"]).split(":")[-1] == g)
                rows.append([_board(run), entry["variant"], g, "-" if n is None else str(n),
                             ", ".join(f"{r['candidate_group']}: {r['n_false']}" for r in mine)
                             or "none (no false candidate at this threshold)",
                             f"{same} of {sum(r['n_false'] for r in mine)}"])
    if not rows:
        return ""
    return html_table(["board", "precision", "probe group", "non-mated searches",
                       "rank-1 false candidates by their group (dataset:group)", "same group as the probe"], rows,
                      [False, False, False, True, False, True])


def dataset_part(runs: Sequence[Run], policy: ProcurementPolicy) -> str:
    """Per watchlist: per probe group the people held out of it (non-mated) against the people a zero-count FPIR
    decision at the policy's target needs (rule of three)."""
    ip = policy.identification
    if ip is None:
        return ""
    need = needed_zero_count_units(ip.target_fpir)
    out, seen = [], set()
    for run in runs:
        for entry, dataset, sec in _entries(run):
            key = (dataset, (sec.get("split") or {}).get("gallery_sha256"))
            t = tuned_threshold(sec)
            if key in seen or t is None:
                continue
            seen.add(key)
            split = sec.get("split") or {}
            rows = []
            for r in rows_at(sec.get(DEPLOYED), "fpir", t["value"]):
                people = r.get("n_subjects") or 0
                mated = next((m for m in rows_at(sec.get(DEPLOYED), "fnir", t["value"]) if m["group"] == r["group"]),
                             {})
                rows.append([r["group"], str(mated.get("n_subjects", "-")), str(people), str(r.get("n")),
                             f"{need} people not enrolled", "enough" if people >= need else
                             f"short by {need - people} people"])
            out.append(f"<h4>{e(dataset)} as a watchlist</h4><p class=muted>" + e(
                f"Gallery: {split.get('n_gallery')} enrolled people ({sec.get('n_gallery')} templates with "
                f"{sec.get('n_distractors')} distractors); {split.get('n_mated_probes')} mated and "
                f"{split.get('n_nonmated_probes')} non-mated searches; rules {split.get('rules')}, seed "
                f"{split.get('seed')}.") + "</p>" + html_table(
                ["probe group", "enrolled people", "people not enrolled", "non-mated searches",
                 f"needed for FPIR ≤ {ip.target_fpir:g} at zero errors (rule of three)", "measured vs needed"],
                rows, [False, True, True, True, False, False]))
    return "".join(out)


NOTE = ("1:N watchlist search (NIST FRVT 1:N, NISTIR 8271 sec. 3; per probe group as NISTIR 8280): FPIR = share "
        "of non-mated searches (the person is not enrolled) returning any candidate at or above the threshold; FNIR "
        "= share of mated searches whose mate is not returned at or above it. Judged at the threshold tuned on fp32 "
        "for the run's target FPIR, which every precision inherits, on the system as deployed (the watchlist "
        "enrolled and searched at that precision). Loss against fp32 is paired over the same searches, both ways "
        "(the fp32 watchlist searched by the variant's probes, and the all-variant system): b = searches fp32 "
        "decided right and the variant wrong, c = the reverse, exact McNemar p; never overlapping intervals. "
        "'*' marks a group of fewer than 30 people.")


def section(runs: Sequence[Run], policy: ProcurementPolicy) -> str:
    ip = policy.identification
    found = ranked([f for run in runs for x in run.entries for f in identification_findings(policy, _board(run), x)])
    out = [f"<p class=muted>{e(NOTE)}</p>",
           "<p>" + e(f"Policy: {ip.sentence()}." if ip else "The policy states no 1:N criteria: figures only.")
           + "</p>"]
    # a board with no watchlist entries is named once, with why (its sections' reasons where it has some)
    out += [f"<p class=muted>{e(_board(run))}: {e('; '.join(_not_computable(run)) or NO_ENTRIES)}.</p>"
            for run in runs if not _entries(run)]
    out.append(summary_table(runs, policy, found))
    table = findings_table(found)
    if table:
        out.append("<h3>Per probe group</h3>" + table)
    charts_ = [(run, svg) for run in runs if (svg := size_chart(run))]
    if charts_:
        out.append("<h3>FPIR against gallery size</h3><p class=muted>Measured on nested galleries (filled markers "
                   "with 95% intervals, joined in the group's dash) and, beyond the data, the independent-comparisons "
                   "model FPIR(N) = 1 - (1 - p_t)^N (hollow markers, a model, not a measurement). Both axes log; a "
                   "zero rate sits on the floor.</p>" + "".join(f"<div class=chart>{svg}</div>" for _, svg in charts_))
    fc = false_candidates_table(runs)
    if fc:
        out.append("<h3>Who the false candidates are</h3><p class=muted>Non-mated searches at the fp32-tuned "
                   "threshold that returned a candidate: the group of the rank-1 candidate against the probe's "
                   "(distractors are named by their own data set's group).</p>" + fc)
    return "".join(out)
