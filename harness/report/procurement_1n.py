"""Verdicts of the 1:N watchlist search against a buyer's policy (`[identification]` of examples/watchlist.toml):
per board x precision x probe group, pass / fail / cannot tell at this n, by the same three-way reading as the
1:1 FMR verdicts (harness/report/procurement.py). Only reads the rows harness/watchlist.py wrote
(run.json `metrics.identification.<dataset>`, docs/metrics.md "Identification"); computes no rate of its own.

Criteria, each at the threshold tuned on fp32 for the run's target FPIR (the `tuned_fpir` threshold every variant
inherits), on the system as deployed: the watchlist enrolled and searched at the entry's precision (`own_gallery`):
- FPIR target: the probe group's FPIR (non-mated searches returning any candidate at or above the threshold,
  NIST FRVT 1:N, NISTIR 8271 sec. 3) as a multiple of target_fpir, with its subject-level 95% interval and counts
  (NISTIR 8280's presentation). pass: the interval's upper end is within max_fpir_multiple x target; fail: its
  lower end is above it; else cannot tell at this n, with the non-mated people a zero count would need (rule of
  three: ln(20)/target, Jovanovic & Levy 1997).
- FNIR ceiling (max_fnir): the group's FNIR (mated searches whose mate is not returned at or above the threshold
  within rank R), the same three-way reading.
- Loss against fp32, paired, read both ways (the fp32 watchlist searched by the variant's probes, and the
  all-variant system), from the decision flips harness/watchlist.py computed over the same searches (b: fp32
  right, variant wrong; c: the reverse; exact McNemar p). Never from overlapping marginal intervals: the searches
  are shared. The rise in the error rate over those searches is (b - c)/n; it is at most b/n, whose exact
  Clopper-Pearson 95% upper end (scipy.stats.binomtest) bounds the rise without any assumption on c. Allowed rise:
  MLPerf Inference's accuracy rule ("99% of fp32", the policy's `retention`) read on the hit rate for FNIR,
  (1 - retention) x (1 - FNIR at fp32), and on the allowed FPIR for FPIR, (1 - retention) x max_fpir_multiple x
  target_fpir. pass: the bound is within the allowed rise; fail: McNemar p < alpha with b > c and the observed
  rise beyond the allowed one; else cannot tell.
- Search speed (max_search_p90_ms at search_gallery_size templates): the single-probe search p90 on the board
  (harness/search_job.py). Where that size was not timed, a search over more templates costs at least as much
  (one dot product per template), so a pass at a larger size passes and a fail at a smaller size fails; else
  cannot tell, naming the sizes timed. An INVALID measurement, a failed search or none timed: cannot tell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.report.procurement import (
    FAIL, PASS, UNSURE, Finding, IdentificationPolicy, ProcurementPolicy, _f, _three_way, needed_zero_count_units,
)
from harness.results.rows import identification_sections, search_speed_records

TUNED = "tuned_fpir"
DEPLOYED = "own_gallery"
READINGS = {"reference_gallery": "fp32 watchlist, {v} probes", "own_gallery": "all {v}"}


def is_1n_criterion(criterion: str) -> bool:
    """A criterion of the 1:N watchlist search (the decision table counts them in a column of their own)."""
    return criterion.startswith("1:N") or criterion.startswith("search speed")


def tuned_threshold(section: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The threshold tuned on fp32 for the run's target FPIR, as the section records it."""
    return next((t for t in section.get("thresholds") or [] if t.get("kind") == TUNED), None)


def rows_at(part: Mapping[str, Any] | None, metric: str, threshold: float) -> list[dict[str, Any]]:
    """A configuration's rate rows of `metric` at `threshold` (every probe group, "all" first)."""
    return [r for r in (part or {}).get("rates") or [] if r.get("metric") == metric
            and r.get("threshold") == threshold]


def _threshold_words(t: Mapping[str, Any]) -> str:
    return f"at {t['value']:.3f}, tuned on fp32 for FPIR {t.get('target_fpir')}"


def fpir_finding(ip: IdentificationPolicy, where: tuple[str, str, str], row: Mapping[str, Any],
                 t: Mapping[str, Any], label: str = "") -> Finding | None:
    """A probe group's FPIR at the tuned threshold against max_fpir_multiple x target_fpir; a group with no
    non-mated search (every person of it enrolled) cannot tell, and says so."""
    if row.get("value") is None:
        return Finding(*where, row["group"], "1:N FPIR target" + label, UNSURE,
                       f"not computable: {row.get('reason') or 'no non-mated searches'}",
                       f"0 non-mated searches of {row.get('n_subjects') or 0} people not enrolled",
                       "no interval without searches", 0.0)
    target = ip.target_fpir
    limit = target * ip.max_fpir_multiple
    lo, hi = row.get("ci_lo"), row.get("ci_hi")
    verdict = _three_way(lo, hi, limit, upper=True)
    value = (f"{row['value'] / target:.2f}x target [{_f(None if lo is None else lo / target, '.2f')}, "
             f"{_f(None if hi is None else hi / target, '.2f')}] (FPIR {_f(row['value'])} {_threshold_words(t)})")
    counts = f"{row.get('k')}/{row.get('n')} non-mated searches of {row.get('n_subjects')} people not enrolled"
    test = (f"{str(row.get('ci_method', 'interval')).replace('_', ' ')} 95% interval over people against "
            f"{ip.max_fpir_multiple:g}x")
    need = needed_zero_count_units(target)
    if verdict == UNSURE and (row.get("n_units") or 0) < need:
        test += f"; a zero count needs about {need} non-mated people to show the target"
    return Finding(*where, row["group"], "1:N FPIR target" + label, verdict, value, counts, test,
                   row["value"] / target)


def fnir_finding(ip: IdentificationPolicy, where: tuple[str, str, str], row: Mapping[str, Any],
                 t: Mapping[str, Any], label: str = "") -> Finding | None:
    """A probe group's FNIR at the tuned threshold against max_fnir."""
    if ip.max_fnir is None or row.get("value") is None:
        return None
    lo, hi = row.get("ci_lo"), row.get("ci_hi")
    verdict = _three_way(lo, hi, ip.max_fnir, upper=True)
    rank = f" within rank {row['rank']}" if row.get("rank") else ""
    return Finding(*where, row["group"], f"1:N FNIR ceiling {ip.max_fnir:g}" + label, verdict,
                   f"FNIR {_f(row['value'])} [{_f(lo)}, {_f(hi)}]{rank} {_threshold_words(t)}",
                   f"{row.get('k')}/{row.get('n')} mated searches of {row.get('n_subjects')} enrolled people",
                   f"{str(row.get('ci_method', 'interval')).replace('_', ' ')} 95% interval over people against "
                   "the ceiling", max(0.0, row["value"] - ip.max_fnir) / max(ip.max_fnir, 1e-12))


def rise_bound(b: int, n: int) -> float:
    """Upper end of the exact (Clopper-Pearson) 95% interval of b/n, the share of searches the variant decided
    worse than fp32: a bound on the rise of the error rate (b - c)/n that holds whatever c is."""
    from scipy.stats import binomtest

    if n <= 0:
        return 1.0
    return float(binomtest(int(b), int(n)).proportion_ci(confidence_level=0.95, method="exact").high)


def loss_finding(policy: ProcurementPolicy, where: tuple[str, str, str], flip: Mapping[str, Any],
                 var_row: Mapping[str, Any] | None, label: str = "") -> Finding | None:
    """One flips row (a group, a search kind, a reading, the tuned threshold) judged against the retention rule.
    var_row: the variant's rate row of the same reading, group and threshold (its k errors over the same n
    searches give fp32's: k - (b - c))."""
    ip = policy.identification
    if ip is None or policy.retention is None or not flip.get("n"):
        return None
    b, c, n, p = int(flip["b"]), int(flip["c"]), int(flip["n"]), flip.get("p_value")
    metric = flip["metric"]
    reading = READINGS.get(flip.get("config"), str(flip.get("config"))).format(v=where[2])
    rise = (b - c) / n
    if metric == "fnir":
        if var_row is None or var_row.get("k") is None or var_row.get("n") != n:
            return None
        ref_rate = (int(var_row["k"]) - (b - c)) / n
        allowed = (1.0 - policy.retention) * (1.0 - ref_rate)
        rule = f"{policy.retention:.0%} of fp32's hit rate 1 - FNIR ({_f(1 - ref_rate)})"
    elif metric == "fpir":
        allowed = (1.0 - policy.retention) * ip.max_fpir_multiple * ip.target_fpir
        rule = f"{1 - policy.retention:.0%} of the allowed FPIR"
    else:
        return None
    bound = rise_bound(b, n)
    significant = p is not None and p < policy.alpha and b > c
    verdict = PASS if bound <= allowed else FAIL if significant and rise > allowed else UNSURE
    kind = "non-mated (FPIR)" if metric == "fpir" else "mated (FNIR)"
    value = (f"{metric.upper()} {'+' if rise >= 0 else ''}{_f(rise)} over the same searches (rise at most "
             f"{_f(bound)}; allowed {_f(allowed)}: {rule})")
    counts = f"{b} worse / {c} better of {n} {kind} searches ({reading})"
    test = f"exact McNemar on the flips, p = {_f(p)}; Clopper-Pearson 95% upper end of b/n bounds the rise"
    return Finding(*where, flip["group"], f"1:N {metric.upper()} loss vs fp32 ({reading}){label}", verdict, value,
                   counts, test, max(0.0, rise - allowed) / max(allowed, 1e-12))


def search_finding(ip: IdentificationPolicy, where: tuple[str, str, str], records: list[dict[str, Any]],
                   label: str = "") -> Finding:
    """The search's p90 on the board against max_search_p90_ms at search_gallery_size templates."""
    size, limit = ip.search_gallery_size, ip.max_search_p90_ms
    crit = f"search speed at {size:,} templates{label}"

    def out(verdict: str, value: str, counts: str, test: str, over: float = 0.0) -> Finding:
        return Finding(*where, "all", crit, verdict, value, counts, test, over)

    failed = [r for r in records if r.get("status") != "ok"]
    timed = sorted((r for r in records if r.get("status") == "ok" and r.get("gallery_size")),
                   key=lambda r: r["gallery_size"])
    if not timed:
        why = (f"search {failed[0].get('status')}: {failed[0].get('reason')}" if failed
               else "search not timed on this board")
        return out(UNSURE, "no search latency", "-", why)

    def text(r: dict[str, Any]) -> str:
        return f"p90 {_f(r.get('p90_ms'), '.4g')} ms at {r['gallery_size']:,} templates"

    def counts(r: dict[str, Any]) -> str:
        return f"{r.get('count')} single-probe searches ({r.get('synthetic') or 0:,} synthetic templates)"

    def valid(r: dict[str, Any]) -> bool:
        return r.get("validity") == "VALID" and r.get("p90_ms") is not None

    exact = next((r for r in timed if r["gallery_size"] == size), None)
    if exact is not None:
        if not valid(exact):
            return out(UNSURE, text(exact), counts(exact), "measurement INVALID ("
                       + ("; ".join(exact.get("validity_reasons") or []) or "no reason given") + ")")
        ok = exact["p90_ms"] <= limit
        return out(PASS if ok else FAIL, text(exact), counts(exact), f"p90 against {limit:g} ms",
                   max(0.0, exact["p90_ms"] / limit - 1.0))
    above = next((r for r in timed if r["gallery_size"] > size and valid(r)), None)
    below = next((r for r in reversed(timed) if r["gallery_size"] < size and valid(r)), None)
    if above is not None and above["p90_ms"] <= limit:
        return out(PASS, text(above), counts(above), f"p90 against {limit:g} ms at a larger gallery than "
                   f"{size:,} (a search costs one dot product per template, so fewer are not slower)")
    if below is not None and below["p90_ms"] > limit:
        return out(FAIL, text(below), counts(below), f"p90 against {limit:g} ms at a smaller gallery than "
                   f"{size:,} (more templates are not faster)", below["p90_ms"] / limit - 1.0)
    sizes = ", ".join(f"{r['gallery_size']:,} ({r.get('validity')})" for r in timed)
    return out(UNSURE, "; ".join(text(r) for r in timed), "; ".join(counts(r) for r in timed),
               f"not timed at {size:,} templates and the sizes timed do not decide it (timed: {sizes})")


def identification_findings(policy: ProcurementPolicy, board: str, entry: Mapping[str, Any]) -> list[Finding]:
    """Every 1:N finding of one entry (a board x model x precision), per watchlist dataset and probe group."""
    ip = policy.identification
    if ip is None or entry.get("status") != "ok":
        return []
    where = (board, entry["model"], entry["variant"])
    sections = list(identification_sections(entry))
    out: list[Finding | None] = []
    for dataset, sec in sections:
        label = f" on {dataset}" if len(sections) > 1 else ""
        t = tuned_threshold(sec)
        if t is None:
            continue
        deployed = sec.get(DEPLOYED)
        out += [fpir_finding(ip, where, r, t, label) for r in rows_at(deployed, "fpir", t["value"])]
        out += [fnir_finding(ip, where, r, t, label) for r in rows_at(deployed, "fnir", t["value"])]
        for f in sec.get("flips") or []:
            if f.get("threshold_kind") != TUNED or f.get("metric") not in ("fpir", "fnir"):
                continue
            var_row = next((r for r in rows_at(sec.get(f.get("config")), f["metric"], t["value"])
                            if r.get("group") == f.get("group")), None)
            out.append(loss_finding(policy, where, f, var_row, label))
        if ip.max_search_p90_ms is not None:
            records = [r for r in search_speed_records(entry) if r.get("dataset") == dataset]
            out.append(search_finding(ip, where, records, label))
    return [f for f in out if f]
