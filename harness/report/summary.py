"""One entry reduced to the figures every view shows: latency, throughput, energy, the task's headline metric,
its worst group, worst-group retention against the reference, validity.

Shared by the console table, compare, the HTML/Markdown/CSV reports and the gate so they always agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

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
    worst_group: str | None
    worst_value: float | None
    worst_n: int | None
    worst_retention: float | None
    worst_retention_group: str | None
    validity: str
    validity_reasons: tuple[str, ...]
    model_sha256: str | None

    @property
    def worst_error(self) -> float | None:
        """Worst-group error (lower is better) for the Pareto view, whatever the metric's direction."""
        if self.worst_value is None or self.metric is None:
            return None
        return 1.0 - self.worst_value if higher_is_better(self.metric) else self.worst_value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overall_ci"] = list(self.overall_ci) if self.overall_ci else None
        d["validity_reasons"] = list(self.validity_reasons)
        d["worst_error"] = self.worst_error
        return d


def summarize(run: Run, entry: dict[str, Any]) -> EntrySummary:
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
    worst = worst_group(rows, metric) if metric else None
    ret = worst_retention(entry, metric, dataset=dataset) if metric else None
    return EntrySummary(
        run_id=run.run_id, target=run.target, entry=entry["entry"], model=entry["model"], variant=entry["variant"],
        task=entry.get("task"), status=entry["status"], reason=entry.get("reason"),
        p50_ms=ss.get("p50_ms"), p90_ms=ss.get("p90_ms"), throughput_ips=offline.get("throughput_ips"),
        energy_mj=speed.get("energy_mj_per_inference"), metric=metric, dataset=dataset,
        overall=overall["value"] if overall else None,
        overall_ci=(overall.get("ci_lo"), overall.get("ci_hi")) if overall else None,
        worst_group=group_label(worst) if worst else None, worst_value=worst["value"] if worst else None,
        worst_n=worst.get("n") if worst else None,
        worst_retention=ret["value"] if ret else None, worst_retention_group=group_label(ret) if ret else None,
        validity=validity.get("status", "n/a"), validity_reasons=tuple(validity.get("reasons") or ()),
        model_sha256=entry.get("model_sha256"),
    )


def summaries(runs: Iterable[Run]) -> list[EntrySummary]:
    return [summarize(run, e) for run in runs for e in run.entries]


def fmt(value: float | None, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)
