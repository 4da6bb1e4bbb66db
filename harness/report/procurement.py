"""A buyer's stated policy (examples/procurement.toml) and, per board x model x precision x group, a verdict
against it: pass, fail, or cannot tell at this n. Used by the buyer's page (harness/report/buyers.py).

Criteria (each optional except the FMR target, which verification needs):
- target_fmr / max_fmr_multiple: a group's same-group FMR at the fp32-tuned threshold as a multiple of the target,
  with its 95% interval and counts, as NISTIR 8280 (Grother, Ngan & Hanaoka 2019, FRVT Part 3) presents group FMRs.
  pass: the interval's upper end is within the allowed multiple; fail: its lower end is above it; otherwise
  "cannot tell at this n". The interval is the run's own (subject bootstrap; one-sided Clopper-Pearson at zero).
- floor.<metric>: a success rate (accuracy, recall; tar = 1 - FNMR at the fp32 threshold) every group must reach;
  same three-way reading of the group's marginal interval (a fixed floor shares no pairs with anything).
- retention: MLPerf Inference's accuracy rule ("99% of fp32", mlcommons/inference_policies) applied to every group.
  Retention = the variant's success rate over fp32's on the same board, same samples. The comparison is paired:
  gender/detection read the paired subject-bootstrap interval of the change (harness.metrics.paired_deltas) and
  report the exact McNemar test on the decision flips (harness.metrics.decision_flips); verification reads the
  paired interval of the FNMR change over the same genuine pairs (harness.metrics.paired_error_rates). pass: the
  interval's worst end keeps the rule; fail: the change is significant (McNemar p < alpha, or the paired interval
  excludes 0) and the best end still breaks the rule; otherwise cannot tell. Marginal intervals only where no pairs
  are shared (no paired rows recorded): then fail only when the variant's interval lies wholly below the rule.
  FMR is not a success rate: 99% of fp32's 0.999 true-non-match rate says nothing, so FMR is judged against the
  target instead and its ratio to fp32 is reported beside it.
- max_p90_ms: single-stream p90 latency; an INVALID measurement cannot tell.
- [identification] (optional, the 1:N watchlist search; IdentificationPolicy, verdicts in
  harness/report/procurement_1n.py): target_fpir / max_fpir_multiple, optional max_fnir, optional max_search_p90_ms
  with the search_gallery_size it applies to.

Sample size a decision would need (needed_subject_pairs): with no false match in n independent units, the
one-sided 95% upper bound is about 3/n (the "rule of three", Jovanovic & Levy 1997, Am. Stat. 51:137), so a group
needs about ln(20)/target subject pairs before a zero count can show the target is met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+; tomli is the declared fallback for 3.10 in pyproject.toml
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from harness.errors import InputError, UsageError
from harness.names import shown

PASS, FAIL, UNSURE = "pass", "fail", "cannot tell at this n"
FLOOR_METRICS = ("accuracy", "recall", "tar")
_KEYS = {"target_fmr", "max_fmr_multiple", "retention", "max_p90_ms", "alpha", "floor", "name", "identification"}
# A policy with no [identification] table still judges every probe group's FPIR against `bench run --fpir`'s
# default target, as a policy with no `retention` key keeps MLPerf's 99%.
_IDENT_KEYS = {"target_fpir", "max_fpir_multiple", "max_fnir", "max_search_p90_ms", "search_gallery_size"}


@dataclass(frozen=True)
class IdentificationPolicy:
    """The 1:N part of a policy (`[identification]`): every probe group's FPIR at the threshold tuned on fp32 for a
    target FPIR at most max_fpir_multiple x target_fpir; optionally its FNIR at that threshold at most max_fnir, and
    the single-probe search p90 on the board at most max_search_p90_ms for a watchlist of search_gallery_size
    templates."""

    target_fpir: float
    max_fpir_multiple: float = 1.0
    max_fnir: float | None = None
    max_search_p90_ms: float | None = None
    search_gallery_size: int | None = None

    def sentence(self) -> str:
        parts = [f"1:N FPIR at most {self.max_fpir_multiple:g}x the target {self.target_fpir:g} in every probe group"]
        if self.max_fnir is not None:
            parts.append(f"1:N FNIR at most {self.max_fnir:g} in every probe group")
        if self.max_search_p90_ms is not None:
            parts.append(f"watchlist search p90 at most {self.max_search_p90_ms:g} ms at "
                         f"{self.search_gallery_size:,} templates")
        return "; ".join(parts)


DEFAULT_IDENTIFICATION = IdentificationPolicy(target_fpir=0.01)


@dataclass(frozen=True)
class ProcurementPolicy:
    target_fmr: float
    max_fmr_multiple: float = 1.0
    retention: float | None = 0.99
    max_p90_ms: float | None = None
    floor: dict[str, float] = field(default_factory=dict)
    alpha: float = 0.05
    name: str = "procurement policy"
    identification: IdentificationPolicy | None = None

    def sentence(self) -> str:
        parts = [f"same-group FMR at most {self.max_fmr_multiple:g}x the target {self.target_fmr:g} in every group"]
        parts += [f"{m} at least {v:g} in every group" for m, v in self.floor.items()]
        if self.retention is not None:
            parts.append(f"every group keeps at least {self.retention:.0%} of its fp32 success rate")
        if self.max_p90_ms is not None:
            parts.append(f"p90 latency at most {self.max_p90_ms:g} ms")
        if self.identification is not None:
            parts.append(self.identification.sentence())
        return "; ".join(parts)


def _number(doc: dict, key: str, where: str, lo: float, hi: float, *, open_lo: bool = True) -> float | None:
    if key not in doc:
        return None
    v = doc[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (lo < v if open_lo else lo <= v) and v <= hi
    if not ok:
        raise UsageError(f"{where}: '{key}' must be a number in {'(' if open_lo else '['}{lo:g}, {hi:g}], got {v!r}")
    return float(v)


def _known_keys(table: dict, valid: set[str], where: str) -> None:
    unknown = set(table) - valid
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(map(shown, unknown)))}; valid: "
                         f"{', '.join(sorted(valid))}")


def _required_rate(table: dict, key: str, what: str, where: str) -> float:
    """A required rate strictly between 0 and 1 (a target the verdicts are multiples of)."""
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise UsageError(f"{where}: '{key}' is required, {what} strictly between 0 and 1; got {value!r}")
    return float(value)


def parse_policy(text: str, where: str) -> ProcurementPolicy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML ({exc})") from None
    _known_keys(doc, _KEYS, where)
    target = _required_rate(doc, "target_fmr", "a false match rate", where)
    floor = doc.get("floor", {})
    if not isinstance(floor, dict):
        raise UsageError(f"{where}: [floor] must be a table of metric = minimum")
    bad = set(floor) - set(FLOOR_METRICS)
    if bad:
        raise UsageError(f"{where}: [floor] unknown metric(s) {', '.join(sorted(map(shown, bad)))}; valid: "
                         f"{', '.join(FLOOR_METRICS)}")
    name = doc.get("name", "procurement policy")
    if not isinstance(name, str):
        raise UsageError(f"{where}: 'name' must be a string")
    return ProcurementPolicy(
        identification=(_identification(doc.get("identification"), where) if "identification" in doc
                        else DEFAULT_IDENTIFICATION),
        target_fmr=target, max_fmr_multiple=_number(doc, "max_fmr_multiple", where, 0.0, 1e6) or 1.0,
        retention=_number(doc, "retention", where, 0.0, 1.0) if "retention" in doc else 0.99,
        max_p90_ms=_number(doc, "max_p90_ms", where, 0.0, 1e9),
        floor={m: _number(floor, m, f"{where} [floor]", 0.0, 1.0, open_lo=False) for m in floor},  # type: ignore[misc]
        alpha=_number(doc, "alpha", where, 0.0, 0.5) or 0.05, name=name)


def _identification(table: Any, where: str) -> IdentificationPolicy:
    """The `[identification]` table, validated like the other keys: one line naming the file and the key."""
    where = f"{where} [identification]"
    if not isinstance(table, dict):
        raise UsageError(f"{where}: must be a table of the 1:N criteria ({', '.join(sorted(_IDENT_KEYS))})")
    _known_keys(table, _IDENT_KEYS, where)
    target = _required_rate(table, "target_fpir", "a false positive identification rate", where)
    p90, size = table.get("max_search_p90_ms"), table.get("search_gallery_size")
    if (p90 is None) != (size is None):
        raise UsageError(f"{where}: 'max_search_p90_ms' and 'search_gallery_size' go together (a search's latency "
                         "depends on the watchlist's size)")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 10**10):
        raise UsageError(f"{where}: 'search_gallery_size' must be a whole number of templates in [1, 1e10], "
                         f"got {size!r}")
    return IdentificationPolicy(
        target_fpir=float(target), max_fpir_multiple=_number(table, "max_fpir_multiple", where, 0.0, 1e6) or 1.0,
        max_fnir=_number(table, "max_fnir", where, 0.0, 1.0, open_lo=False),
        max_search_p90_ms=_number(table, "max_search_p90_ms", where, 0.0, 1e9), search_gallery_size=size)


def load_policy(path: str | Path) -> ProcurementPolicy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{shown(path)}: cannot read procurement policy ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{shown(path)}: procurement policy is not UTF-8 text (offset {exc.start})") from None
    return parse_policy(text, shown(path))


# Without a policy: target FMR 1e-3, 99% retention, and target FPIR 0.01 (`bench run --fpir`'s default).
DEFAULT_POLICY = ProcurementPolicy(target_fmr=1e-3, identification=DEFAULT_IDENTIFICATION)


def needed_subject_pairs(target_fmr: float, confidence: float = 0.95) -> int:
    """Subject pairs a group needs so that zero false matches put the one-sided upper bound at the target
    (rule of three: -ln(1 - confidence) / target)."""
    return needed_zero_count_units(target_fmr, confidence)


def needed_zero_count_units(target: float, confidence: float = 0.95) -> int:
    """Independent units (subject pairs for FMR, non-mated people for FPIR) a group needs so that a zero error
    count puts the one-sided upper bound at the target: -ln(1 - confidence) / target, about 3/target at 95% (the
    rule of three, Jovanovic & Levy 1997)."""
    return math.ceil(-math.log(1.0 - confidence) / target)


def needed_samples(observed: float, floor: float, confidence: float = 0.95) -> int | None:
    """Independent units a group needs for the interval around an observed success rate to clear a floor below
    it: the normal approximation n = z^2 p (1-p) / (p - floor)^2, and never fewer than a perfect score needs
    (floor^n <= 1 - confidence, the exact one-sided bound); None when observed <= floor."""
    if observed <= floor:
        return None
    z = 1.959963984540054 if confidence == 0.95 else _z(confidence)
    # at least what a perfect score needs for its one-sided exact bound to clear the floor: floor^n <= 1 - conf
    perfect = math.ceil(math.log(1.0 - confidence) / math.log(floor)) if 0 < floor < 1 else 1
    return max(perfect, math.ceil(z * z * observed * (1 - observed) / (observed - floor) ** 2))


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


@dataclass(frozen=True)
class Finding:
    """One verdict: which board/model/precision/group, against which criterion, and everything needed to read it."""

    board: str
    model: str
    variant: str
    group: str
    criterion: str  # "FMR target", "<metric> floor", "retention", "speed"
    verdict: str  # PASS / FAIL / UNSURE
    value: str  # the figure, as printed (e.g. "3.2x target [0.9, 8.1]")
    counts: str  # "k/n pairs, S subjects"
    test: str  # which test, its p and its n
    size: float  # for ranking: how far past the criterion (a multiple, or a shortfall); larger is worse

    def sentence(self) -> str:
        return (f"{self.model} {self.variant} on {self.board}, {self.group}: {self.criterion} {self.verdict}: "
                f"{self.value} ({self.counts}; {self.test})")


def _three_way(lo: float | None, hi: float | None, limit: float, *, upper: bool) -> str:
    """upper: the value must stay at or below `limit` (an error rate); else at or above (a success rate)."""
    if lo is None or hi is None:
        return UNSURE
    if upper:
        return PASS if hi <= limit else FAIL if lo > limit else UNSURE
    return PASS if lo >= limit else FAIL if hi < limit else UNSURE


def _f(v: float | None, spec: str = "#.3g") -> str:
    return "-" if v is None else ("0" if v == 0 else format(v, spec))


def fmr_finding(policy: ProcurementPolicy, where: tuple[str, str, str], row: dict[str, Any],
                paired: dict[str, Any] | None) -> Finding | None:
    """A group's same-group FMR at the fp32 threshold against the target (row: a tuned "fmr" rate row)."""
    if row.get("value") is None:
        return None
    t = policy.target_fmr
    limit = t * policy.max_fmr_multiple
    lo, hi = row.get("ci_lo"), row.get("ci_hi")
    verdict = _three_way(lo, hi, limit, upper=True)
    value = f"{row['value'] / t:.2f}x target [{_f(None if lo is None else lo / t, '.2f')}, " \
            f"{_f(None if hi is None else hi / t, '.2f')}] (FMR {_f(row['value'])})"
    counts = (f"{row.get('k')}/{row.get('n')} impostor pairs over {row.get('n_units')} subject pairs of "
              f"{row.get('n_subjects')} subjects")
    test = f"{row.get('ci_method', 'interval').replace('_', ' ')} 95% interval against {policy.max_fmr_multiple:g}x"
    if verdict == UNSURE and (row.get("n_units") or 0) < needed_subject_pairs(t):
        test += f"; a zero count needs about {needed_subject_pairs(t)} subject pairs to show the target"
    if paired and paired.get("ratio") is not None:
        value += (f"; {paired['ratio']:.2f}x fp32 [{_f(paired.get('ratio_ci_lo'), '.2f')}, "
                  f"{_f(paired.get('ratio_ci_hi'), '.2f')}]")
    if paired:
        test += (f"; vs fp32 over the same pairs: errors {paired.get('ref_k')} → {paired.get('var_k')}, paired "
                 f"subject bootstrap p = {_f(paired.get('p_value'))}")
    return Finding(*where, row["group"], "FMR target", verdict, value, counts, test, row["value"] / t)


def floor_finding(policy: ProcurementPolicy, where: tuple[str, str, str], metric: str, row: dict[str, Any],
                  value: float | None, lo: float | None, hi: float | None, counts: str) -> Finding | None:
    floor = policy.floor.get(metric)
    if floor is None or value is None:
        return None
    verdict = _three_way(lo, hi, floor, upper=False)
    test = "marginal 95% interval against the floor (a fixed floor shares no pairs)"
    if verdict == UNSURE and (need := needed_samples(value, floor)):
        test += f"; about {need} independent units would decide at this rate"
    return Finding(*where, row["group"], f"{metric} floor {floor:g}", verdict,
                   f"{_f(value)} [{_f(lo)}, {_f(hi)}]", counts, test, max(0.0, floor - value) / max(floor, 1e-12))


def retention_finding(policy: ProcurementPolicy, where: tuple[str, str, str], metric: str, group: str,
                      ref: float | None, var: float | None, d_lo: float | None, d_hi: float | None,
                      significant: bool | None, counts: str, test: str) -> Finding | None:
    """Paired: d_lo/d_hi is the interval of the change var - ref of a success rate over shared samples/pairs."""
    rule = policy.retention
    if rule is None or ref in (None, 0) or var is None:
        return None
    margin = (1.0 - rule) * ref
    ret = var / ref
    if d_lo is None or d_hi is None:
        verdict = UNSURE
    elif d_lo >= -margin:
        verdict = PASS
    elif significant and d_hi < -margin:
        verdict = FAIL
    elif significant and ret < rule:
        verdict = FAIL
    else:
        verdict = UNSURE
    value = f"retention {ret:.4f} ({_f(ref)} → {_f(var)}; change [{_f(d_lo, '+.3g')}, {_f(d_hi, '+.3g')}])"
    return Finding(*where, group, f"{metric} retention {rule:.0%}", verdict, value, counts, test,
                   max(0.0, rule - ret))


def speed_finding(policy: ProcurementPolicy, where: tuple[str, str, str], p90: float | None, count: int | None,
                  validity: str, reasons: tuple[str, ...]) -> Finding | None:
    if policy.max_p90_ms is None or p90 is None:
        return None
    if validity == "INVALID":
        verdict, test = UNSURE, f"measurement INVALID ({'; '.join(reasons) or 'no reason given'})"
    else:
        verdict = PASS if p90 <= policy.max_p90_ms else FAIL
        test = f"p90 of {count} single-stream timings against {policy.max_p90_ms:g} ms"
    return Finding(*where, "all", "speed", verdict, f"p90 {p90:.2f} ms", f"{count} timings", test,
                   max(0.0, p90 / policy.max_p90_ms - 1.0))


def entry_findings(policy: ProcurementPolicy, board: str, run, entry: dict[str, Any]) -> list[Finding]:
    """Every finding of one entry (a board x model x precision) on its headline dataset's default grouping."""
    from harness.report.summary import paired_rate_rows, rate_rows, reference_rows, summarize

    s = summarize(run, entry)
    where = (board, entry["model"], entry["variant"])
    out: list[Finding] = []
    if s.status != "ok":
        return out
    ss = ((entry.get("speed") or {}).get("single_stream") or {})
    out.append(speed_finding(policy, where, s.p90_ms, ss.get("count"), s.validity, s.validity_reasons))
    if not s.metric:
        return [f for f in out if f]
    rows = [r for r in rate_rows(entry, s.metric) if s.dataset is None or r.get("dataset") == s.dataset]
    gb = next((r["group_by"] for r in rows if r.get("group") != "all"), None)
    rows = _one_grouping(rows, gb)
    is_ref = entry["variant"] == "onnx-fp32"
    if s.metric == "fmr":
        paired = {(r["metric"], r["group"]): r for r in paired_rate_rows(entry)
                  if s.dataset is None or r.get("dataset") == s.dataset}
        for r in rows:
            out.append(fmr_finding(policy, where, r, paired.get(("fmr", r["group"]))))
        fnmr = _one_grouping([r for r in rate_rows(entry, "fnmr")
                              if s.dataset is None or r.get("dataset") == s.dataset], gb)
        for r in fnmr:
            if r.get("value") is None:
                continue
            counts = f"{r.get('n', 0) - r.get('k', 0)}/{r.get('n')} genuine pairs of {r.get('n_subjects')} subjects"
            lo, hi = r.get("ci_lo"), r.get("ci_hi")
            out.append(floor_finding(policy, where, "tar", r, 1 - r["value"], None if hi is None else 1 - hi,
                                     None if lo is None else 1 - lo, counts))
            p = paired.get(("fnmr", r["group"]))
            if p and not is_ref:
                d_lo = None if p.get("ci_hi") is None else -p["ci_hi"]
                d_hi = None if p.get("ci_lo") is None else -p["ci_lo"]
                sig = None if d_lo is None else (d_hi < 0 or d_lo > 0)
                out.append(retention_finding(
                    policy, where, "tar", r["group"], 1 - p["ref_value"], 1 - p["var_value"], d_lo, d_hi, sig,
                    f"{p.get('n')} genuine pairs of {p.get('n_subjects')} subjects, the same for fp32",
                    f"paired subject bootstrap over the same genuine pairs, p = {_f(p.get('p_value'))}"))
        return [f for f in out if f]
    deltas = {(r["group_by"], r["group"]): r for r in reference_rows(entry, "deltas")
              if r.get("metric") == s.metric and (s.dataset is None or r.get("dataset") == s.dataset)}
    flips = {(r["group_by"], r["group"]): r for r in reference_rows(entry, "flips")
             if r.get("metric") == s.metric and (s.dataset is None or r.get("dataset") == s.dataset)}
    for r in rows:
        counts = f"{r.get('k')}/{r.get('n')} correct" if r.get("k") is not None else f"n = {r.get('n')}"
        out.append(floor_finding(policy, where, s.metric, r, r.get("value"), r.get("ci_lo"), r.get("ci_hi"),
                                 counts))
        if is_ref:
            continue
        d, f = deltas.get((r["group_by"], r["group"])), flips.get((r["group_by"], r["group"]))
        if d is not None:
            p = f.get("p_value") if f else None
            test = (f"exact McNemar on {f['b']} lost / {f['c']} gained of {f['n']} paired samples, p = {_f(p)}; "
                    f"paired subject bootstrap for the interval" if f else "paired subject bootstrap (no flips "
                    "recorded)")
            out.append(retention_finding(policy, where, s.metric, r["group"], d.get("ref_value"), d.get("var_value"),
                                         d.get("ci_lo"), d.get("ci_hi"), None if p is None else p < policy.alpha,
                                         f"{d.get('n')} paired samples of {d.get('n_units')} subjects", test))
    return [f for f in out if f]


def _one_grouping(rows: list[dict[str, Any]], group_by: str | None) -> list[dict[str, Any]]:
    """The rows of one grouping, with one "all" row (every grouping repeats the overall one)."""
    mine = [r for r in rows if r.get("group_by") == group_by]
    if not any(r.get("group") == "all" for r in mine):
        mine = [r for r in rows if r.get("group") == "all"][:1] + mine
    return mine


ORDER = {FAIL: 0, UNSURE: 1, PASS: 2}


def ranked(findings: list[Finding]) -> list[Finding]:
    """Failures first, then the undecided, each by size (how far past the criterion), largest first."""
    return sorted(findings, key=lambda f: (ORDER[f.verdict], -f.size, f.board, f.model, f.variant, f.group))
