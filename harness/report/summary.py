"""One entry reduced to the figures every view shows: latency, throughput, energy, the task's headline metric,
its worst group, worst-group retention against the reference, validity.

Shared by the console table, compare, the HTML/Markdown/CSV reports and the gate so they always agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from harness.models.fidelity import flag_text
from harness.report.tables import md_table
from harness.results.rows import energy_record
from harness.results.store import Run

# Known metrics: True when higher is better. The gate refuses a metric not listed here (a typo in a policy must
# not silently pass). Names follow harness.metrics rate rows.
METRICS: dict[str, bool] = {
    "accuracy": True, "tar": True, "recall": True, "precision": True, "det_hit": True, "detection_recall": True,
    "found": True,  # detection: a face was found at all (harness.scoring.TASK_METRICS)
    "fmr": False, "fnmr": False, "fmr_cross": False, "fta": False, "fta_rate": False, "eye_err": False, "error": False,
}
# The headline metric per task: the first of these present in the entry's rate rows. Verification leads with the
# same-group FMR at the fp32-tuned threshold: false matches are the failure that lands on the wrong person, and
# the variant's FMR at the inherited threshold is what "does 0.51 still mean 1e-3 on this device" asks.
PRIMARY: dict[str, tuple[str, ...]] = {
    "gender": ("accuracy",),
    "verification": ("fmr", "fnmr", "tar"),
    "detection": ("recall", "detection_recall", "det_hit"),
}


def higher_is_better(metric: str) -> bool:
    return METRICS.get(metric, True)


def headline(row: dict[str, Any]) -> bool:
    """Rows at the run's operating point. Verification rows also come at user-fixed cut-offs
    (threshold_kind "fixed", e.g. "what does 0.8 mean here"); those are context, not the figure to judge."""
    return row.get("threshold_kind") != "fixed"


def rate_rows(entry: dict[str, Any], metric: str | None = None, *, all_thresholds: bool = False) -> list[dict[str, Any]]:
    rows = (entry.get("metrics") or {}).get("rates") or []
    return [r for r in rows if (metric is None or r.get("metric") == metric) and (all_thresholds or headline(r))]


def reference_rows(entry: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """metrics.reference.<kind> rows (deltas, retention, threshold_transfer ...) at the operating point, without
    the per-(metric, group_by) summary rows harness.metrics appends (they carry 'worst_group')."""
    rows = ((entry.get("metrics") or {}).get("reference") or {}).get(kind) or []
    return [r for r in rows if headline(r) and "worst_group" not in r]


def retention_value(row: dict[str, Any]) -> float | None:
    """harness.metrics.precision_loss.retention writes 'retention' (with ref_value/var_value)."""
    return row.get("retention", row.get("value"))


def primary_metric(entry: dict[str, Any]) -> str | None:
    present = {r.get("metric") for r in rate_rows(entry)}
    for metric in PRIMARY.get(entry.get("task") or "", ()):
        if metric in present:
            return metric
    return next((r["metric"] for r in rate_rows(entry)), None)


# A group needs this many samples to be named the worst: with 2 images one error is 50 points of accuracy, which
# would make the same tiny group "worst" in every report. Groups between this and n=30 are shown flagged "small".
MIN_WORST_N = 10


def _eligible(rows: list[dict[str, Any]], n_of: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    big = [r for r in rows if n_of.get((r["group_by"], r["group"]), r.get("n", 0)) >= MIN_WORST_N]
    return big or rows


def worst_group(rows: Iterable[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The worst non-overall group with n >= MIN_WORST_N (all groups when none is that large)."""
    groups = [r for r in rows if r.get("group") != "all" and r.get("value") is not None]
    if not groups:
        return None
    sign = 1.0 if higher_is_better(metric) else -1.0
    return min(_eligible(groups, {}), key=lambda r: (sign * r["value"], -r.get("n", 0)))


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if None in (a.get("ci_lo"), a.get("ci_hi"), b.get("ci_lo"), b.get("ci_hi")):
        return False
    return a["ci_lo"] <= b["ci_hi"] and b["ci_lo"] <= a["ci_hi"]


def tied_with_worst(rows: Iterable[dict[str, Any]], worst: dict[str, Any]) -> list[dict[str, Any]]:
    """The other groups (n >= MIN_WORST_N, same grouping) whose interval overlaps the worst group's: the data
    cannot order them, so the worst group is "tied within intervals" with them (an independent scorer may well
    name the runner-up; docs/results.md)."""
    groups = [r for r in rows if r.get("group") != "all" and r.get("value") is not None
              and r.get("group_by") == worst.get("group_by") and r is not worst]
    return [r for r in _eligible(groups, {}) if r.get("n", 0) >= MIN_WORST_N and _overlap(r, worst)]


def headline_dataset(run: Run, rows: list[dict[str, Any]]) -> str | None:
    """The dataset a headline figure comes from: the one whose overall row counts the most samples (ties: the
    run's dataset order), i.e. the strongest evidence the run has for that metric.

    Rate rows carry a "dataset" context field; a headline or a delta that mixed two datasets would compare
    London's studio photos with FairFace's in-the-wild ones. None when the rows carry no dataset.
    """
    totals: dict[str, int] = {}
    for r in rows:
        if r.get("dataset") is not None and r.get("group") == "all":
            totals[r["dataset"]] = max(totals.get(r["dataset"], 0), int(r.get("n") or 0))
    if not totals:
        present = [r.get("dataset") for r in rows if r.get("dataset") is not None]
        return present[0] if present else None
    order = [d.get("id") for d in (run.doc.get("data") or {}).get("datasets", [])]
    rank = {d: i for i, d in enumerate(order)}
    return min(totals, key=lambda d: (-totals[d], rank.get(d, len(rank))))


def worst_retention(entry: dict[str, Any], metric: str, *, dataset: str | None = None) -> dict[str, Any] | None:
    """The group that kept the least of its reference value (metrics.reference.retention rows, var/ref),
    among groups with n >= MIN_WORST_N in the entry's rate rows. Returned row has 'value' = the retention."""
    rows = [{**r, "value": retention_value(r)} for r in reference_rows(entry, "retention")
            if r.get("metric", metric) == metric and r.get("group") != "all" and retention_value(r) is not None
            and (dataset is None or r.get("dataset", dataset) == dataset)]
    if not rows:
        return None
    n_of = {(r["group_by"], r["group"]): r.get("n", 0) for r in rate_rows(entry, metric)}
    sign = 1.0 if higher_is_better(metric) else -1.0  # for an error rate, retention > 1 is the loss
    return min(_eligible(rows, n_of), key=lambda r: sign * r["value"])


def group_label(row: dict[str, Any]) -> str:
    return f"{row['group_by']}={row['group']}"


@dataclass(frozen=True)
class EntrySummary:
    run_id: str
    target: str
    entry: str
    model: str
    variant: str
    task: str | None
    status: str
    reason: str | None
    p50_ms: float | None
    p90_ms: float | None
    throughput_ips: float | None
    energy_mj: float | None
    metric: str | None
    dataset: str | None
    overall: float | None
    overall_ci: tuple[float | None, float | None] | None
    fnmr: float | None  # verification: the overall FNMR beside the headline FMR, same dataset and threshold
    fnmr_ci: tuple[float | None, float | None] | None
    worst_group: str | None
    worst_value: float | None
    worst_n: int | None
    worst_retention: float | None
    worst_retention_group: str | None
    validity: str
    validity_reasons: tuple[str, ...]
    model_sha256: str | None
    format: str | None = None  # "onnx" / "tflite": the variant's file format (entry "format")
    precision: str | None = None  # "fp32" / "fp16" / "int8" (entry "precision")
    worst_subjects: int | None = None  # the subjects the worst group's rate and interval rest on
    target_fmr: float | None = None  # verification: the FMR the fp32 threshold was tuned to
    worst_tied: tuple[str, ...] = ()  # groups whose interval overlaps the worst group's (tied_with_worst)
    worst_ci: tuple[float | None, float | None] | None = None

    @property
    def worst_multiple(self) -> float | None:
        """Verification: the worst group's FMR as a multiple of the target FMR (NISTIR 8280 presents group
        FMRs this way), so "target met overall" never hides a group at 10x the target."""
        if self.metric != "fmr" or self.worst_value is None or not self.target_fmr:
            return None
        return self.worst_value / self.target_fmr

    @property
    def worst_text(self) -> str:
        """The worst group as a reader should take it: its name and n, and "tied within intervals" (with how many
        groups) when another group's interval overlaps its own."""
        if not self.worst_group:
            return "-"
        n = len(self.worst_tied)
        tied = f"; tied within intervals with {n} other group{'s' if n > 1 else ''}" if n else ""
        return f"{self.worst_group.split('=', 1)[-1]} ({self.worst_n_text}{tied})"

    @property
    def worst_n_text(self) -> str:
        """The worst group's n as the interval sees it: "100 subjects, 178200 pairs" where the unit is a subject
        (verification), else "n=..."."""
        if self.worst_subjects is not None and self.worst_n is not None and self.worst_subjects != self.worst_n:
            return f"{self.worst_subjects} subjects, {self.worst_n} pairs"
        return f"n={self.worst_n}"
    fidelity_flag: str | None = None  # built outside fidelity tolerance: the figures and the build host's kernel path
    # the energy per inference above idle beside the gross `energy_mj` (run.json speed.energy_above_idle, projected
    # by harness.results.rows.energy_record as the export and store columns of the same names): value, 95% interval
    net_energy_mj: float | None = None
    net_energy_ci: tuple[float | None, float | None] | None = None

    @property
    def worst_error(self) -> float | None:
        """Worst-group error (lower is better) for the Pareto view, whatever the metric's direction."""
        if self.worst_value is None or self.metric is None:
            return None
        return 1.0 - self.worst_value if higher_is_better(self.metric) else self.worst_value

    def fields(self) -> dict[str, Any]:
        """The dataclass fields as JSON values (tuples as lists): what a stored headline keeps
        (harness.results.headline); EntrySummary.from_fields reads them back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, d: dict[str, Any]) -> EntrySummary:
        tuples = ("overall_ci", "fnmr_ci", "validity_reasons", "worst_tied", "worst_ci", "net_energy_ci")
        return cls(**{k: (tuple(v) if k in tuples and v is not None else v) for k, v in d.items()
                      if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overall_ci"] = list(self.overall_ci) if self.overall_ci else None
        d["fnmr_ci"] = list(self.fnmr_ci) if self.fnmr_ci else None
        d["validity_reasons"] = list(self.validity_reasons)
        d["worst_tied"] = list(self.worst_tied)
        d["worst_ci"] = list(self.worst_ci) if self.worst_ci else None
        d["net_energy_ci"] = list(self.net_energy_ci) if self.net_energy_ci else None
        d["worst_error"] = self.worst_error
        d["worst_multiple"] = self.worst_multiple
        return d


def summarize(run: Run, entry: dict[str, Any]) -> EntrySummary:
    if "headline_summary" in entry:  # a stored headline (harness.results.headline): computed at push time
        fields = dict(entry["headline_summary"])
        if "net_energy_mj" not in fields:  # a headline stored before the field: its entry still has the speed block
            fields.update(_net_energy(entry.get("speed")))
        return EntrySummary.from_fields(fields)
    speed = entry.get("speed") or {}
    ss = speed.get("single_stream") or {}
    offline = speed.get("offline") or {}
    validity = speed.get("validity") or {}
    metric = primary_metric(entry)
    rows = rate_rows(entry, metric) if metric else []
    dataset = headline_dataset(run, rows)
    if dataset is not None:  # never mix groups of two datasets in one headline
        rows = [r for r in rows if r.get("dataset") == dataset]
    overall = next((r for r in rows if r.get("group") == "all"), None)
    fnmr = None
    if metric == "fmr":
        fnmr = next((r for r in rate_rows(entry, "fnmr") if r.get("group") == "all" and r.get("dataset") == dataset
                     and overall is not None and r.get("threshold") == overall.get("threshold")), None)
    worst = worst_group(rows, metric) if metric else None
    ret = worst_retention(entry, metric, dataset=dataset) if metric else None
    return EntrySummary(
        run_id=run.run_id, target=run.target, entry=entry["entry"], model=entry["model"], variant=entry["variant"],
        task=entry.get("task"), status=entry["status"], reason=entry.get("reason"),
        p50_ms=ss.get("p50_ms"), p90_ms=ss.get("p90_ms"), throughput_ips=offline.get("throughput_ips"),
        energy_mj=speed.get("energy_mj_per_inference"), metric=metric, dataset=dataset,
        overall=overall["value"] if overall else None,
        overall_ci=(overall.get("ci_lo"), overall.get("ci_hi")) if overall else None,
        fnmr=fnmr.get("value") if fnmr else None, fnmr_ci=(fnmr.get("ci_lo"), fnmr.get("ci_hi")) if fnmr else None,
        worst_group=group_label(worst) if worst else None, worst_value=worst["value"] if worst else None,
        worst_n=worst.get("n") if worst else None,
        worst_retention=ret["value"] if ret else None, worst_retention_group=group_label(ret) if ret else None,
        validity=validity.get("status", "n/a"), validity_reasons=tuple(validity.get("reasons") or ()),
        model_sha256=entry.get("model_sha256"),
        format=entry.get("format") or _variant_part(entry.get("variant"), 0),
        precision=entry.get("precision") or _variant_part(entry.get("variant"), 1),
        worst_subjects=worst.get("n_subjects") if worst else None,
        target_fmr=(overall or {}).get("target_fmr") if metric == "fmr" else None,
        worst_tied=tuple(group_label(r) for r in tied_with_worst(rows, worst)) if worst else (),
        worst_ci=(worst.get("ci_lo"), worst.get("ci_hi")) if worst else None,
        fidelity_flag=flag_text(entry.get("fidelity")),
        **_net_energy(speed),
    )


def _net_energy(speed: Any) -> dict[str, Any]:
    """EntrySummary's net energy fields from an entry's speed block, by the export's projection (rows.energy_record)."""
    rec = energy_record(speed if isinstance(speed, dict) else None)
    lo, hi = rec["net_energy_ci_lo_mj"], rec["net_energy_ci_hi_mj"]
    return {"net_energy_mj": rec["net_energy_mj"], "net_energy_ci": None if lo is None else (lo, hi)}


def _variant_part(variant: str | None, i: int) -> str | None:
    """'onnx-int8' -> 'onnx' (0) / 'int8' (1), for entries written before "format"/"precision" were recorded."""
    parts = (variant or "").split("-", 1)
    return parts[i] if len(parts) == 2 else None


def summaries(runs: Iterable[Run]) -> list[EntrySummary]:
    return [summarize(run, e) for run in runs for e in run.entries]


def fmt(value: float | None, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def fmt_rate(value: float | None, none: str = "-") -> str:
    """A rate to three significant digits, trailing zeros kept: 0.00100 and 0.00141 stay apart (at three decimals
    both read 0.001, which hides the FMR an int8 variant gains at the fp32 threshold); 0.125 stays 0.125."""
    if value is None:
        return none
    return "0" if value == 0 else format(value, "#.3g")


def fmt_ci(row: dict[str, Any]) -> str:
    """"[lo, hi]" of a rate row, or "-" when it has none (a rate that is not computable)."""
    if row.get("ci_lo") is None or row.get("ci_hi") is None:
        return "-"
    return f"[{fmt_rate(row['ci_lo'])}, {fmt_rate(row['ci_hi'])}]"


def fmt_rate_row(row: dict[str, Any] | None) -> str:
    """The value of a rate row, or why it has none ("not computable: no genuine pairs")."""
    if row is None:
        return "-"
    if row.get("value") is None and row.get("reason"):
        return f"not computable: {row['reason']}"
    return fmt_rate(row.get("value"))


@dataclass(frozen=True)
class VerificationGroup:
    """One group's FMR and FNMR rows (either may be None) at one dataset's operating threshold."""

    dataset: str | None
    threshold: float | None
    group_by: str
    group: str
    fmr: dict[str, Any] | None
    fnmr: dict[str, Any] | None

    @property
    def n_subjects(self) -> int | None:
        counts = [r.get("n_subjects") for r in (self.fmr, self.fnmr) if r and r.get("n_subjects") is not None]
        return max(counts) if counts else None


def verification_groups(entry: dict[str, Any]) -> list[VerificationGroup]:
    """FMR beside FNMR for each (dataset, group) at the headline threshold (the fp32-tuned one a variant
    inherits), in row order: what the console and Markdown group tables show for a verification entry."""
    by_key: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rate_rows(entry):
        if r.get("metric") in ("fmr", "fnmr"):
            by_key.setdefault((r.get("dataset"), r.get("threshold"), r["group_by"], r["group"]), {})[r["metric"]] = r
    return [VerificationGroup(d, t, by, g, m.get("fmr"), m.get("fnmr")) for (d, t, by, g), m in by_key.items()]


def verification_markdown(entry: dict[str, Any], title: str) -> list[str]:
    """Markdown lines: FMR beside FNMR by group (see verification_groups), one section per dataset, titled with the
    dataset and the threshold, rates to three significant digits with their subject-level 95% intervals."""
    lines: list[str] = []
    groups = verification_groups(entry)
    for dataset in dict.fromkeys(v.dataset for v in groups):
        part = [v for v in groups if v.dataset == dataset]
        thr = next((v.threshold for v in part if v.threshold is not None), None)
        lines += [f"## {title}: FMR and FNMR by group on {dataset or '-'} at threshold {fmt(thr, '.4f')}", "",
                  "Each subject counts once (FMR: each pair of subjects); 95% CI over subjects; pairs = errors/pairs.",
                  "", md_table(["group by", "group", "subjects", "FMR", "FMR 95% CI", "FMR pairs", "FNMR",
                                "FNMR 95% CI", "FNMR pairs", "small"],
                               [[v.group_by, v.group, fmt(v.n_subjects, "d"), fmt_rate_row(v.fmr), fmt_ci(v.fmr or {}),
                                 pair_counts(v.fmr), fmt_rate_row(v.fnmr), fmt_ci(v.fnmr or {}), pair_counts(v.fnmr),
                                 "yes" if any(r and r.get("small") for r in (v.fmr, v.fnmr)) else ""]
                                for v in part]), ""]
    return lines


def pair_counts(row: dict[str, Any] | None) -> str:
    """Raw "errors/pairs" of a verification rate row, so the weighted value never hides the counts."""
    return f"{row['k']}/{row['n']}" if row and row.get("n") else "-"


def pipeline_sensitivity(run: Run) -> tuple[str | None, list[dict[str, Any]]]:
    """(a one-line note when the run has no sensitivity rows, rows with "model" added) from run.json's
    pipeline_sensitivity section (harness.metrics.pipeline_sensitivity)."""
    section = run.doc.get("pipeline_sensitivity") or {}
    if not section or section.get("status") == "not_applicable":  # no gender model in the run: nothing to say
        return None, []
    if section.get("status") != "ok":
        return f"pipeline sensitivity {section.get('status')}: {section.get('reason')}", []
    rows = [dict(r, model=model) for model, m in (section.get("models") or {}).items() for r in m.get("rows") or []]
    notes = [f"{model}: {m.get('reason')}" for model, m in (section.get("models") or {}).items()
             if m.get("status") != "ok"]
    return ("; ".join(notes) or None), rows


def sensitivity_tables(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Pipeline-sensitivity rows split per (model, dataset): one table each, groups of two datasets never mixed."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["model"], r["dataset"]), []).append(r)
    return out


def sensitivity_cells(r: dict[str, Any]) -> list[str]:
    """The printed cells of one pipeline-sensitivity row, shared by the console, Markdown and HTML tables."""
    return [r["group_by"], r["group"], str(r["n"]),
            f"{r['fta_harness']}/{r['fta_upstream']}", fmt(r.get("acc_harness")), fmt(r.get("acc_upstream")),
            fmt(r.get("delta"), "+.3f"), f"[{fmt(r.get('ci_lo'), '+.3f')}, {fmt(r.get('ci_hi'), '+.3f')}]",
            f"{r['b']}/{r['c']}", fmt(r.get("p_value"), ".4f"),
            f"{fmt(r.get('male_share_harness'), '.2f')}/{fmt(r.get('male_share_upstream'), '.2f')}"]


# h = harness chips, up = upstream chips; the HTML/Markdown notes and docs/metrics.md spell the columns out.
SENSITIVITY_HEADERS = ("group by", "group", "n", "FTA h/up", "acc h", "acc up", "Δ up−h", "95% CI", "b/c",
                       "McNemar p", "male h/up")


# Verification precision loss at the fp32 threshold (metrics.reference.paired_rates, harness.metrics.
# paired_error_rates): per group, each variant's FMR and FNMR over the same comparisons as fp32's.
PAIRED_HEADERS = ("metric", "group", "subjects", "pairs", "fp32", "variant", "variant / fp32 [95% CI]",
                  "variant − fp32 [95% CI]", "paired p", "errors fp32 → variant")


def paired_rate_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return reference_rows(entry, "paired_rates")


def paired_rate_cells(r: dict[str, Any]) -> list[str]:
    """The printed cells of one paired-rate row, shared by the HTML and Markdown reports and the buyer's page.
    A ratio with a zero fp32 rate says so instead of a number."""
    if r.get("ratio") is not None:
        ratio = f"{r['ratio']:.2f}x"
        if r.get("ratio_ci_lo") is not None:
            ratio += f" [{r['ratio_ci_lo']:.2f}, {r['ratio_ci_hi']:.2f}]"
    else:
        ratio = "no ratio: fp32 rate is 0"
    delta = fmt_rate(r.get("delta")) if r.get("delta") is not None else "-"
    if r.get("ci_lo") is not None:
        delta += f" [{fmt_rate(r['ci_lo'])}, {fmt_rate(r['ci_hi'])}]"
    return [r["metric"], r["group"], fmt(r.get("n_subjects"), "d"), fmt(r.get("n"), "d"),
            fmt_rate(r.get("ref_value")), fmt_rate(r.get("var_value")), ratio, delta, fmt(r.get("p_value"), ".3g"),
            f"{r.get('ref_k', '-')} → {r.get('var_k', '-')}"]


PAIRED_NOTE = ("Each variant at the threshold tuned on fp32, over the same comparisons as fp32: ratio and difference "
               "with a paired 95% interval (subjects resampled once for both, so their variation cancels); p: the "
               "paired bootstrap's two-sided p of the difference; errors: raw error pairs. Rates subject-weighted.")


def verification_group_rows(run: Run,
                            entry: dict[str, Any]) -> tuple[str | None, dict[str, dict[str, dict[str, Any]]]]:
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
