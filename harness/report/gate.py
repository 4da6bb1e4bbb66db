"""CI gate: a TOML policy of checks evaluated on a run (and a baseline run for latency), JUnit XML output.

The policy is parsed ONCE into check objects; each check looks at one entry and returns a failure message or None
(the pytest-benchmark --benchmark-compare-fail style), or raises Skip when it does not apply to that entry.
A policy naming an unknown kind/metric/stat/key is a UsageError naming the check, before anything is evaluated.

Latency regressions need evidence, not a bare percentage: a check fails only when the slowdown of the chosen
statistic exceeds the bound AND a one-sided Mann-Whitney U test on the raw timings says the run is slower than the
baseline at level alpha. Noise on a shared runner then does not flip the gate, a real slowdown does.

A baseline judges a run only when it was measured on the same board (harness/report/board.py; policy
`[baseline] match`: the same physical board, board model or tag value; always the same target and emulated-or-real):
any other baseline is refused (UsageError, exit 2) naming both boards. Given several candidate baselines (one per
board of a pool), the gate takes the one measured on the run's board. A baseline entry that completed but is
missing from the run (absent, skipped or unavailable) fails every check that applies to it (`[baseline] missing =
"fail"`, the default) or is listed as skipped ("skip"): a nightly that drops a model does not pass.
A latency check with `emulated = "skip"` skips the entries of an emulated lane (their timings are not the board's).
"""

from __future__ import annotations

import fnmatch
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.stats import mannwhitneyu

try:  # Python 3.11+; tomli is the declared fallback for 3.10 in pyproject.toml
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from harness.errors import (
    EXIT_GATE_BOTH,
    EXIT_GATE_FAIRNESS,
    EXIT_GATE_PERF,
    EXIT_OK,
    InputError,
    UsageError,
)
from harness.names import shown
from harness.report.board import board_of, check_match_rule, mismatch
from harness.report.summary import METRICS, headline, higher_is_better, rate_rows, reference_rows, retention_value
from harness.results.store import Run

PERF, FAIRNESS = "perf", "fairness"
LATENCY_STATS = {
    "mean_ms": np.mean,
    "p50_ms": lambda t: np.percentile(t, 50), "p90_ms": lambda t: np.percentile(t, 90),
    "p95_ms": lambda t: np.percentile(t, 95), "p99_ms": lambda t: np.percentile(t, 99),
}
DISPARITY_SUMMARIES = ("max_min_ratio", "max_min_diff", "max_geomean", "gini", "garbe", "fdr")
MAX_LISTED = 5  # groups named in one failure message


class Skip(Exception):
    """The check does not apply to this entry (reason in the message); reported as a skipped testcase."""


def _fmt_group(r: Mapping[str, Any], value: float) -> str:
    small = ", small n" if r.get("small") else ""
    n = f" (n={r['n']}{small})" if "n" in r else ""
    return f"{r['group_by']}={r['group']} {value:.4f}{n}"


@dataclass(frozen=True)
class Check(ABC):
    name: str
    entry_glob: str

    kind: ClassVar[str]
    category: ClassVar[str]
    keys: ClassVar[frozenset[str]]
    needs_baseline: ClassVar[bool] = False

    def applies_to(self, entry_id: str) -> bool:
        return fnmatch.fnmatchcase(entry_id, self.entry_glob)

    @abstractmethod
    def evaluate(self, run: Run, entry: dict[str, Any], baseline: Run | None) -> str | None:
        """Failure message, or None when the entry passes; raise Skip when the check does not apply."""


def _metric(where: str, spec: Mapping[str, Any]) -> str:
    metric = spec.get("metric")
    if metric not in METRICS:
        raise UsageError(f"{where}: unknown metric {metric!r}; valid: {', '.join(sorted(METRICS))}")
    return metric


def _number(where: str, spec: Mapping[str, Any], key: str, default: float | None = None) -> float | None:
    value = spec.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UsageError(f"{where}: '{key}' must be a number, got {value!r}")
    return value


@dataclass(frozen=True)
class RetentionCheck(Check):
    """Each group (or the overall row) keeps at least `min` of its own reference value (MLPerf '99% of fp32')."""

    metric: str
    min: float
    scope: str

    kind = "retention"
    category = FAIRNESS
    keys = frozenset({"metric", "min", "scope"})

    def evaluate(self, run: Run, entry: dict[str, Any], baseline: Run | None) -> str | None:
        rows = [{**r, "value": retention_value(r)} for r in reference_rows(entry, "retention")
                if r.get("metric") == self.metric and retention_value(r) is not None
                and (r["group"] == "all") == (self.scope == "overall")]
        if not rows:
            raise Skip(f"no {self.metric} retention rows (the reference entry itself, or no reference in the run)")
        n = {(r["group_by"], r["group"]): r for r in rate_rows(entry, self.metric)}
        bad = sorted((r for r in rows if r["value"] < self.min), key=lambda r: r["value"])
        if not bad:
            return None
        listed = ", ".join(_fmt_group({**n.get((r["group_by"], r["group"]), {}), **r}, r["value"])
                           for r in bad[:MAX_LISTED])
        return (f"{self.metric} retention below {self.min} in {len(bad)} group(s): {listed}"
                + (" ..." if len(bad) > MAX_LISTED else ""))


@dataclass(frozen=True)
class DisparityCheck(Check):
    """A disparity summary stays at or below `max` (ratios, differences, Gini, GARBE: 0 or 1 is equal) or at or
    above `min` (FDR: 1 is perfectly fair)."""

    metric: str
    summary: str
    max: float | None
    group_by: str | None
    min: float | None = None

    kind = "disparity"
    category = FAIRNESS
    keys = frozenset({"metric", "summary", "max", "min", "group_by"})

    def evaluate(self, run: Run, entry: dict[str, Any], baseline: Run | None) -> str | None:
        rows = [r for r in (entry.get("metrics") or {}).get("disparities") or []
                if headline(r) and r.get("metric") == self.metric and r.get("summary") == self.summary
                and (self.group_by is None or r.get("group_by") == self.group_by)]
        if not rows:
            raise Skip(f"no {self.summary} disparity rows for {self.metric}")
        bad = [r for r in rows if r.get("value") is None or (self.max is not None and r["value"] > self.max)
               or (self.min is not None and r["value"] < self.min)]
        if not bad:
            return None
        bound = " and ".join(b for b in ((f"<= {self.max}" if self.max is not None else ""),
                                         (f">= {self.min}" if self.min is not None else "")) if b)
        return "; ".join(
            f"{self.metric} {self.summary} over {r['group_by']} = "
            + ("undefined (null)" if r.get("value") is None else f"{r['value']:.4f}")
            + f", not {bound}" + (" (underpowered: too few samples to trust)" if r.get("underpowered") else "")
            for r in bad)


@dataclass(frozen=True)
class RateCheck(Check):
    """A rate (overall, one named group, or every group) stays within [min, max]."""

    metric: str
    group: str
    group_by: str | None
    min: float | None
    max: float | None

    kind = "rate"
    category = FAIRNESS
    keys = frozenset({"metric", "group", "group_by", "min", "max"})

    def evaluate(self, run: Run, entry: dict[str, Any], baseline: Run | None) -> str | None:
        rows = [r for r in rate_rows(entry, self.metric) if r.get("value") is not None
                and (self.group_by is None or r["group_by"] == self.group_by)
                and (r["group"] != "all" if self.group == "every_group" else r["group"] == self.group)]
        if not rows:
            raise Skip(f"no {self.metric} rows for group {self.group!r}")
        bad = [r for r in rows if (self.min is not None and r["value"] < self.min)
               or (self.max is not None and r["value"] > self.max)]
        if not bad:
            return None
        bound = " and ".join(f"{op} {v}" for op, v in ((">=", self.min), ("<=", self.max)) if v is not None)
        listed = ", ".join(_fmt_group(r, r["value"]) for r in bad[:MAX_LISTED])
        return f"{self.metric} not {bound} in {len(bad)} group(s): {listed}" + (" ..." if len(bad) > MAX_LISTED else "")


@dataclass(frozen=True)
class LatencyCheck(Check):
    """Slowdown of `stat` vs the baseline beyond max_slowdown_pct AND significant (one-sided Mann-Whitney U)."""

    stat: str
    max_slowdown_pct: float
    alpha: float
    allow_invalid: bool
    emulated: str = "check"  # "skip": an emulated lane's entries are skipped (its timings are not a board's)

    kind = "latency"
    category = PERF
    keys = frozenset({"stat", "max_slowdown_pct", "test", "alpha", "allow_invalid", "emulated"})
    needs_baseline = True

    def evaluate(self, run: Run, entry: dict[str, Any], baseline: Run | None) -> str | None:
        assert baseline is not None  # gate() refuses a latency policy without a baseline
        if self.emulated == "skip" and (emulated := board_of(run.doc).emulated):
            raise Skip(f"emulated lane ({emulated}): latency not judged (policy emulated = 'skip')")
        base_entry = next((e for e in baseline.entries if e["entry"] == entry["entry"]), None)
        if base_entry is None:
            raise Skip(f"{entry['entry']} is not in baseline {baseline.run_id}")
        new_t, base_t = run.timings(entry["entry"]), baseline.timings(entry["entry"])
        if new_t is None or base_t is None or new_t.size == 0 or base_t.size == 0:
            raise Skip("no raw timings in " + (run.run_id if new_t is None or new_t.size == 0 else baseline.run_id))
        invalid = [f"{who} measurement INVALID ({'; '.join(v.get('reasons') or []) or 'no reason given'})"
                   for who, e in (("run", entry), ("baseline", base_entry))
                   if (v := (e.get("speed") or {}).get("validity") or {}).get("status") == "INVALID"]
        stat = LATENCY_STATS[self.stat]
        new_s, base_s = float(stat(new_t)), float(stat(base_t))
        slowdown = 100.0 * (new_s / base_s - 1.0)
        p = float(mannwhitneyu(new_t, base_t, alternative="greater").pvalue)
        figures = (f"{self.stat} {new_s:.3f} ms vs {base_s:.3f} ms ({slowdown:+.1f}%, bound +{self.max_slowdown_pct}%), "
                   f"Mann-Whitney p={p:.2g} (alpha {self.alpha})")
        if invalid and not self.allow_invalid:
            return f"{'; '.join(invalid)}: latency cannot be trusted; {figures}"
        if slowdown > self.max_slowdown_pct and p < self.alpha:
            return f"latency regression: {figures}" + (f" [{'; '.join(invalid)}]" if invalid else "")
        return None


_KINDS: dict[str, type[Check]] = {c.kind: c for c in (RetentionCheck, DisparityCheck, RateCheck, LatencyCheck)}
_COMMON = frozenset({"kind", "name", "entry"})


def parse_check(spec: Mapping[str, Any], where: str) -> Check:
    """One [[check]] table -> a Check; every mistake is a UsageError naming `where`."""
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise UsageError(f"{where}: unknown kind {kind!r}; valid: {', '.join(sorted(_KINDS))}")
    where = f"{where} (kind={kind!r})"
    cls = _KINDS[kind]
    unknown = set(spec) - cls.keys - _COMMON
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join(sorted(cls.keys | _COMMON))}")
    entry_glob = str(spec.get("entry", "*"))
    if kind == "retention":
        metric = _metric(where, spec)
        if not higher_is_better(metric):
            raise UsageError(f"{where}: retention needs a higher-is-better metric, {metric!r} is an error rate "
                             "(use kind='rate' or 'disparity')")
        scope = spec.get("scope", "every_group")
        if scope not in ("every_group", "overall"):
            raise UsageError(f"{where}: unknown scope {scope!r}; valid: every_group, overall")
        minimum = _number(where, spec, "min")
        if minimum is None:
            raise UsageError(f"{where}: 'min' is required")
        name = spec.get("name") or f"retention {metric} {scope} >= {minimum}"
        return RetentionCheck(name, entry_glob, metric, minimum, scope)
    if kind == "disparity":
        metric = _metric(where, spec)
        summary = spec.get("summary")
        if summary not in DISPARITY_SUMMARIES:
            raise UsageError(f"{where}: unknown summary {summary!r}; valid: {', '.join(DISPARITY_SUMMARIES)}")
        maximum, minimum = _number(where, spec, "max"), _number(where, spec, "min")
        if maximum is None and minimum is None:
            raise UsageError(f"{where}: give 'max' and/or 'min'")
        bounds = " ".join(b for b in ((f"<= {maximum}" if maximum is not None else ""),
                                      (f">= {minimum}" if minimum is not None else "")) if b)
        name = spec.get("name") or f"disparity {metric} {summary} {bounds}"
        return DisparityCheck(name, entry_glob, metric, summary, maximum, spec.get("group_by"), minimum)
    if kind == "rate":
        metric = _metric(where, spec)
        lo, hi = _number(where, spec, "min"), _number(where, spec, "max")
        if lo is None and hi is None:
            raise UsageError(f"{where}: give 'min' and/or 'max'")
        group = str(spec.get("group", "all"))
        bound = " ".join(f"{op} {v}" for op, v in ((">=", lo), ("<=", hi)) if v is not None)
        name = spec.get("name") or f"rate {metric}[{group}] {bound}"
        return RateCheck(name, entry_glob, metric, group, spec.get("group_by"), lo, hi)
    stat = spec.get("stat")
    if stat not in LATENCY_STATS:
        raise UsageError(f"{where}: unknown stat {stat!r}; valid: {', '.join(LATENCY_STATS)}")
    if spec.get("test", "mannwhitney") != "mannwhitney":
        raise UsageError(f"{where}: unknown test {spec['test']!r}; valid: mannwhitney")
    bound = _number(where, spec, "max_slowdown_pct")
    alpha = _number(where, spec, "alpha", 0.01)
    if bound is None:
        raise UsageError(f"{where}: 'max_slowdown_pct' is required")
    if not 0 < alpha < 1:  # type: ignore[operator]
        raise UsageError(f"{where}: alpha must be in (0, 1), got {alpha}")
    emulated = spec.get("emulated", "check")
    if emulated not in ("check", "skip"):
        raise UsageError(f"{where}: unknown emulated {emulated!r}; valid: check, skip")
    name = spec.get("name") or f"latency {stat} slowdown <= {bound}%"
    return LatencyCheck(name, entry_glob, stat, bound, alpha, bool(spec.get("allow_invalid", False)),  # type: ignore[arg-type]
                        emulated)


@dataclass(frozen=True)
class BaselineRule:
    """Policy `[baseline]`: which baseline may judge a run (`match`, harness/report/board.py) and what a baseline
    entry missing from the run does (`missing`: "fail" or "skip")."""

    match: str = "board"
    missing: str = "fail"

    keys: ClassVar[frozenset[str]] = frozenset({"match", "missing"})


def parse_baseline_rule(spec: Any, where: str) -> BaselineRule:
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: [baseline] must be a table")
    unknown = set(spec) - BaselineRule.keys
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join(sorted(BaselineRule.keys))}")
    match = check_match_rule(str(spec.get("match", "board")), where)
    missing = spec.get("missing", "fail")
    if missing not in ("fail", "skip"):
        raise UsageError(f"{where}: unknown missing {missing!r}; valid: fail, skip")
    return BaselineRule(match, missing)


@dataclass(frozen=True)
class Policy:
    path: str
    checks: tuple[Check, ...]
    baseline: BaselineRule = BaselineRule()

    @property
    def needs_baseline(self) -> bool:
        return any(c.needs_baseline for c in self.checks)


def parse_policy(text: str, path: str = "policy.toml") -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"check", "baseline"}
    if unknown:
        raise UsageError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}; expected [[check]] tables "
                         "and an optional [baseline] table")
    specs = doc.get("check")
    if not isinstance(specs, list) or not specs:
        raise UsageError(f"{path}: no [[check]] tables")
    rule = parse_baseline_rule(doc.get("baseline", {}), f"{path} [baseline]")
    return Policy(path, tuple(parse_check(s, f"{path} check #{i}") for i, s in enumerate(specs, 1)), rule)


def load_policy(path: str | Path) -> Policy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{shown(path)}: cannot read policy ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{shown(path)}: policy is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                         f"{exc.start}); TOML files are UTF-8") from None
    return parse_policy(text, str(path))


@dataclass(frozen=True)
class Outcome:
    check: str
    category: str
    entry: str
    message: str | None = None  # failure
    skipped: str | None = None

    @property
    def failed(self) -> bool:
        return self.message is not None


@dataclass(frozen=True)
class GateResult:
    run_id: str
    baseline_id: str | None
    outcomes: tuple[Outcome, ...]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def exit_code(self) -> int:
        cats = {o.category for o in self.failures}
        if {PERF, FAIRNESS} <= cats:
            return EXIT_GATE_BOTH
        return EXIT_GATE_PERF if PERF in cats else EXIT_GATE_FAIRNESS if FAIRNESS in cats else EXIT_OK

    def to_junit(self) -> ET.ElementTree:
        """One testsuite, one testcase per check per entry; failure type = perf|fairness."""
        fails = len(self.failures)
        skips = sum(1 for o in self.outcomes if o.skipped)
        attrs = {"tests": str(len(self.outcomes)), "failures": str(fails), "errors": "0", "skipped": str(skips)}
        root = ET.Element("testsuites", name="bench gate", **attrs)
        suite = ET.SubElement(root, "testsuite", name=f"bench gate {self.run_id}", **attrs)
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="run_id", value=self.run_id)
        ET.SubElement(props, "property", name="baseline", value=self.baseline_id or "")
        for o in self.outcomes:
            case = ET.SubElement(suite, "testcase", classname=o.entry, name=o.check, time="0")
            if o.message is not None:
                ET.SubElement(case, "failure", message=o.message, type=o.category).text = o.message
            elif o.skipped is not None:
                ET.SubElement(case, "skipped", message=o.skipped)
        ET.indent(root)
        return ET.ElementTree(root)


def select_baseline(policy: Policy, run: Run, candidates: Sequence[Run]) -> Run:
    """The newest candidate (created_utc) measured on the run's board under the policy's match rule, so accepting a
    new baseline for a board supersedes its older one; UsageError (exit 2) naming the run's board and every
    candidate's when none is."""
    rule = policy.baseline.match
    mine = board_of(run.doc)
    verdicts = [(c, mismatch(rule, mine, board_of(c.doc))) for c in candidates]
    fitting = [c for c, why in verdicts if why is None]
    if fitting:
        return max(fitting, key=lambda c: (c.doc.get("created_utc") or "", c.run_id))
    listed = "; ".join(f"baseline {c.run_id} ({board_of(c.doc).describe(rule)}): {why}" for c, why in verdicts)
    raise UsageError(f"no baseline for run {run.run_id} ({mine.describe(rule)}) under [baseline] match = "
                     f"{rule!r}: {listed}")


def _missing_entries(run: Run, baseline: Run | None) -> dict[str, str]:
    """Baseline entries that completed there and did not here: entry id -> what happened to it in the run."""
    if baseline is None:
        return {}
    here = {e["entry"]: e for e in run.entries}
    out = {}
    for b in baseline.entries:
        e = here.get(b["entry"])
        if b.get("status") == "ok" and (e is None or e["status"] in ("skipped", "unavailable")):
            out[b["entry"]] = ("not in this run" if e is None
                               else f"{e['status']} in this run: {e.get('reason') or '-'}")
    return out


def gate(policy: Policy, run: Run, baseline: Run | None = None) -> GateResult:
    """Evaluate every check on every entry it applies to, and on every baseline entry the run lost."""
    if policy.needs_baseline and baseline is None:
        names = ", ".join(c.name for c in policy.checks if c.needs_baseline)
        raise UsageError(f"{policy.path}: check(s) {names} compare against a baseline: give --baseline RUN")
    if baseline is not None:
        select_baseline(policy, run, [baseline])  # refuses a baseline from another board, naming both
    missing = _missing_entries(run, baseline)
    absent = [{"entry": eid, "status": "missing"} for eid in missing if eid not in {e["entry"] for e in run.entries}]
    outcomes = []
    for check in policy.checks:
        for entry in [*run.entries, *absent]:
            if not check.applies_to(entry["entry"]):
                continue
            o = dict(check=check.name, category=check.category, entry=entry["entry"])
            if entry["entry"] in missing:
                why = f"ok in baseline {baseline.run_id}, {missing[entry['entry']]}"  # type: ignore[union-attr]
                outcomes.append(Outcome(**o, skipped=f"{why} (skipped by policy: [baseline] missing = 'skip')")
                                if policy.baseline.missing == "skip" else Outcome(**o, message=why))
                continue
            if entry["status"] in ("skipped", "unavailable"):
                outcomes.append(Outcome(**o, skipped=f"entry {entry['status']}: {entry.get('reason') or '-'}"))
                continue
            if entry["status"] == "failed":
                outcomes.append(Outcome(**o, message=f"entry failed: {entry.get('reason') or 'no reason given'}"))
                continue
            try:
                outcomes.append(Outcome(**o, message=check.evaluate(run, entry, baseline)))
            except Skip as skip:
                outcomes.append(Outcome(**o, skipped=str(skip)))
    return GateResult(run.run_id, baseline.run_id if baseline else None, tuple(outcomes))


def outcome_lines(result: GateResult) -> Sequence[str]:
    """Human summary: failures first, then counts."""
    lines = [f"FAIL [{o.category}] {o.entry}: {o.check}: {o.message}" for o in result.failures]
    passed = sum(1 for o in result.outcomes if not o.failed and not o.skipped)
    skipped = sum(1 for o in result.outcomes if o.skipped)
    lines.append(f"gate {result.run_id}: {passed} passed, {len(result.failures)} failed, {skipped} skipped "
                 f"-> exit {result.exit_code}")
    return lines
