"""Compare runs side by side per model x variant (each run carries its target), with deltas against the first run,
warnings where the environments differ in ways that change the numbers, and the procurement (Pareto) view.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.report.board import board_of
from harness.report.summary import EntrySummary, fmt, fmt_rate, summarize
from harness.results.store import Run
from harness.specs import variant_slug

# Environment fingerprint keys whose difference changes speed or outputs (dotted path, case-insensitive).
_ENV_MATTERS = re.compile(r"(cpu|processor|device|runtime|provider|version|flags)", re.I)
# kernel_path is compared on its own (kernel_path_warnings): one warning naming both paths, not one per feature.
_ENV_IGNORE = re.compile(r"(^git\.|^kernel_path\.|commit|dirty|hostname|uptime|timestamp|_utc$|mem.*avail)", re.I)


def flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from flatten(v, key + ".")
        else:
            yield key, v


def pareto_front(points: Sequence[Sequence[float]]) -> np.ndarray:
    """Mask of non-dominated points when every coordinate is to be minimised.

    j dominates i when j <= i in every coordinate and j < i in at least one; O(n^2 d) with broadcasting, fine
    for the tens of entries a comparison holds.
    """
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        return np.zeros(0, dtype=bool)
    no_worse = (p[None, :, :] <= p[:, None, :]).all(axis=-1)  # [i, j]: j no worse than i everywhere
    better = (p[None, :, :] < p[:, None, :]).any(axis=-1)
    return ~(no_worse & better).any(axis=1)


def diff_ci(base: tuple[float, float, float], new: tuple[float, float, float]) -> tuple[float, float]:
    """CI of new - base from the two Wilson intervals in the rate rows (Newcombe 1998, method 10).

    Each argument is (value, ci_lo, ci_hi). Assumes independent samples: conservative for the same images.
    """
    p1, l1, u1 = base
    p2, l2, u2 = new
    d = p2 - p1
    return d - math.hypot(p2 - l2, u1 - p1), d + math.hypot(u2 - p2, p1 - l1)


def _pct(new: float | None, base: float | None) -> float | None:
    return None if new is None or not base else 100.0 * (new - base) / base


@dataclass(frozen=True)
class Delta:
    """A cell's change against the first run's cell of the same model x variant."""

    p90_pct: float | None
    throughput_pct: float | None
    energy_pct: float | None
    overall: float | None
    overall_ci: tuple[float, float] | None
    worst: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "overall_ci": list(self.overall_ci) if self.overall_ci else None}


def delta(base: EntrySummary, new: EntrySummary) -> Delta:
    ci = None
    same = base.metric == new.metric and base.dataset == new.dataset
    if (same and base.overall is not None and new.overall is not None
            and base.overall_ci and new.overall_ci and None not in base.overall_ci + new.overall_ci):
        ci = diff_ci((base.overall, *base.overall_ci), (new.overall, *new.overall_ci))  # type: ignore[arg-type]
    return Delta(
        p90_pct=_pct(new.p90_ms, base.p90_ms), throughput_pct=_pct(new.throughput_ips, base.throughput_ips),
        energy_pct=_pct(new.energy_mj, base.energy_mj),
        overall=new.overall - base.overall if same and None not in (new.overall, base.overall) else None,  # type: ignore[operator]
        overall_ci=ci,
        worst=new.worst_value - base.worst_value if same and None not in (new.worst_value, base.worst_value) else None,  # type: ignore[operator]
    )


@dataclass
class CompareRow:
    model: str
    variant: str
    cells: list[EntrySummary | None]  # one per run, in run order
    deltas: list[Delta | None]  # vs cells[0]; None for the first run and where either side is missing


@dataclass
class CompareTable:
    run_ids: list[str]
    targets: list[str]
    rows: list[CompareRow]
    warnings: list[str] = field(default_factory=list)
    pareto: list[tuple[str, str]] = field(default_factory=list)  # (run_id, entry) on the front
    pareto_axes: tuple[str, ...] = ()
    cross_isa: list[dict[str, Any]] = field(default_factory=list)  # cross_isa_rows() of every run that has them
    kernel_paths: list[dict[str, Any]] = field(default_factory=list)  # kernel_path_rows(): each run's int8 path
    measured_on: list[str] = field(default_factory=list)  # per run: real hardware (which board) or emulated (by what)

    def on_front(self, s: EntrySummary) -> bool:
        return (s.run_id, s.entry) in self.pareto

    def long_rows(self) -> list[dict[str, Any]]:
        """One flat dict per (model, variant, run): the shape of the Markdown/CSV/console tables."""
        out = []
        for row in self.rows:
            for cell, d in zip(row.cells, row.deltas):
                if cell is None:
                    continue
                out.append({
                    "model": row.model, "variant": row.variant, "run": cell.run_id, "target": cell.target,
                    "status": cell.status, "p90_ms": fmt(cell.p90_ms, ".2f"),
                    "d_p90_pct": fmt(d.p90_pct if d else None, "+.1f"),
                    "throughput_ips": fmt(cell.throughput_ips, ".1f"),
                    "d_throughput_pct": fmt(d.throughput_pct if d else None, "+.1f"),
                    "energy_mj": fmt(cell.energy_mj, ".2f"),
                    # above idle, beside the gross figure (harness/metrics/energy.py), with its 95% Welch interval
                    "net_energy_mj": fmt(cell.net_energy_mj, ".2f"),
                    "net_energy_ci_mj": (f"[{cell.net_energy_ci[0]:.2f}, {cell.net_energy_ci[1]:.2f}]"
                                         if cell.net_energy_ci else "-"),
                    "metric": f"{cell.metric} ({cell.dataset})" if cell.metric and cell.dataset else cell.metric or "-",
                    "overall": fmt_rate(cell.overall),
                    "d_overall": (fmt(d.overall, "+.3f") + (f" [{d.overall_ci[0]:+.3f}, {d.overall_ci[1]:+.3f}]"
                                                            if d.overall_ci else "")) if d else "-",
                    # n as the interval sees it (subjects, and pairs for verification); "tied within intervals"
                    "worst_group": (f"{cell.worst_group} ({cell.worst_n_text}"
                                    + (f"; tied within intervals with {len(cell.worst_tied)} other group(s)"
                                       if cell.worst_tied else "") + ")") if cell.worst_group else "-",
                    "worst_value": fmt_rate(cell.worst_value),
                    "worst_x_target": fmt(cell.worst_multiple, ".2f"),
                    "d_worst": fmt(d.worst if d else None, "+.3f"),
                    "worst_retention": fmt(cell.worst_retention, ".4f"), "validity": cell.validity,
                    "pareto": "yes" if self.on_front(cell) else "",
                })
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{"run_id": r, "target": t} for r, t in zip(self.run_ids, self.targets)],
            "rows": [{"model": r.model, "variant": r.variant,
                      "cells": [c.to_dict() if c else None for c in r.cells],
                      "deltas": [d.to_dict() if d else None for d in r.deltas]} for r in self.rows],
            "warnings": self.warnings,
            "pareto": {"axes": list(self.pareto_axes), "front": [{"run_id": r, "entry": e} for r, e in self.pareto]},
            "cross_isa": self.cross_isa,
            "kernel_paths": self.kernel_paths,
        }

    def to_markdown(self) -> str:
        from harness.report.tables import md_table

        parts = [f"# Comparison of {len(self.run_ids)} runs (deltas vs {self.run_ids[0]})", ""]
        if self.measured_on:
            runs = list(zip(self.run_ids, self.targets, self.measured_on))
            parts += [md_table(["run", "target", "measured on"], runs), ""]
        if self.kernel_paths:
            parts += ["Int8 kernel path per run (derived from each machine's CPU flags, harness/kernel_path.py): "
                      + "; ".join(f"{r['run']}: {r['int8_label']} [{r['int8']}]" for r in self.kernel_paths), ""]
        if self.warnings:
            parts += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        rows = self.long_rows()
        parts += ["## Entries", "", md_table(list(rows[0]) if rows else ["model"], [list(r.values()) for r in rows]), ""]
        parts += [f"Pareto front over ({', '.join(self.pareto_axes)}), all minimised, VALID measurements only: "
                  + (", ".join(f"{r}:{e}" for r, e in self.pareto) or "(no entry has all axes)"), ""]
        if self.cross_isa:
            parts += ["## Cross-ISA precision loss (same pack, same inputs; reference ISA → device ISA)", "",
                      md_table(list(self.cross_isa[0]), [list(r.values()) for r in self.cross_isa]), ""]
        return "\n".join(parts)


def environment_warnings(runs: Sequence[Run]) -> list[str]:
    """Differences that make a side-by-side misleading: CPU, runtime versions, providers, model and data hashes."""
    warnings: list[str] = []
    base = runs[0]
    base_env = {k: v for k, v in flatten(base.doc.get("environment") or {})
                if _ENV_MATTERS.search(k) and not _ENV_IGNORE.search(k)}
    base_data = {d["id"]: d.get("manifest_sha256") for d in (base.doc.get("data") or {}).get("datasets", [])}
    base_entries = {e["entry"]: e for e in base.entries}
    for run in runs:
        env = dict(flatten(run.doc.get("environment") or {}))
        git = env.get("git.dirty", env.get("dirty", env.get("git_dirty")))
        if git is True:
            warnings.append(f"{run.run_id}: measured from a dirty git tree (uncommitted changes)")
        if run is base:
            continue
        for key, value in base_env.items():
            other = env.get(key)
            if other == value:
                continue
            if isinstance(value, list) and isinstance(other, list):
                # CPU flag lists run to 100+ items: say what differs, not both lists.
                only_a, only_b = sorted(set(value) - set(other)), sorted(set(other) - set(value))
                warnings.append(f"{run.run_id}: environment {key} differs: only in {base.run_id}: "
                                f"{', '.join(only_a[:8]) or '-'}{' ...' if len(only_a) > 8 else ''}; only here: "
                                f"{', '.join(only_b[:8]) or '-'}{' ...' if len(only_b) > 8 else ''}")
            else:
                warnings.append(f"{run.run_id}: environment {key} differs: {value!r} vs {other!r}")
        for ds in (run.doc.get("data") or {}).get("datasets", []):
            if ds["id"] in base_data and ds.get("manifest_sha256") != base_data[ds["id"]]:
                warnings.append(f"{run.run_id}: dataset {ds['id']} manifest sha256 differs from {base.run_id}")
        for e in run.entries:
            b = base_entries.get(e["entry"])
            if b is None:
                continue
            if b.get("model_sha256") != e.get("model_sha256"):
                warnings.append(f"{run.run_id}: {e['entry']} model sha256 differs from {base.run_id}")
            active_b = (b.get("backend") or {}).get("active")
            active_e = (e.get("backend") or {}).get("active")
            if active_b != active_e:
                warnings.append(f"{run.run_id}: {e['entry']} active provider {active_e} vs {active_b}")
    return warnings


def kernel_path_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Each run's int8 kernel path (harness/kernel_path.py), from the machine that ran its models: the worker's own
    fingerprint (device_environment: the board's on a remote run) when there is one, else the host's."""
    from harness.kernel_path import of_run

    out = []
    for run in runs:
        kp = of_run(run.doc)
        out.append({"run": run.run_id, "machine": "worker" if run.doc.get("device_environment") else "host",
                    "int8": kp["int8"], "int8_label": kp["int8_label"], "can_saturate": kp["int8_can_saturate"]})
    return out


def kernel_path_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One warning per run whose int8 kernel path differs from the first run's: the same int8 pack may then give
    other outputs and decisions (`bench compare A B --drift` measures by how much)."""
    if not rows:
        return []
    base = rows[0]
    return [f"{r['run']}: int8 kernel path differs: {r['int8_label']} [{r['int8']}] vs {base['int8_label']} "
            f"[{base['int8']}] in {base['run']}; int8 outputs may differ (measure it: bench compare {base['run']} "
            f"{r['run']} --drift)" for r in rows[1:] if r["int8"] != base["int8"]]


def compare(runs: Sequence[Run]) -> CompareTable:
    """Side-by-side table of runs (the first is the baseline for deltas), warnings, and the Pareto front."""
    if not runs:
        raise ValueError("compare needs at least one run")
    summaries = [{e["entry"]: summarize(run, e) for e in run.entries} for run in runs]
    keys: dict[tuple[str, str], None] = {}
    for run in runs:
        for e in run.entries:
            keys.setdefault((e["model"], e["variant"]), None)
    rows = []
    for model, variant in keys:
        entry_id = f"{model}--{variant_slug(variant)}"
        cells = [s.get(entry_id) for s in summaries]
        base = cells[0]
        deltas = [None] + [delta(base, c) if base and c else None for c in cells[1:]]
        rows.append(CompareRow(model, variant, cells, deltas))
    kernel_paths = kernel_path_rows(runs)
    flags = [f"{s.run_id}: {s.entry} {s.fidelity_flag}" for by_entry in summaries for s in by_entry.values()
             if s.fidelity_flag]
    table = CompareTable([r.run_id for r in runs], [r.target for r in runs], rows,
                         kernel_path_warnings(kernel_paths) + environment_warnings(runs) + flags,
                         kernel_paths=kernel_paths)
    table.pareto_axes, table.pareto = procurement_front([c for r in rows for c in r.cells if c])
    table.cross_isa = [row for run in runs for row in cross_isa_rows(run)]
    table.measured_on = [measured_on(run) for run in runs]
    return table


def measured_on(run: Run) -> str:
    """Where a run's timings come from, for the report's run list: an emulated board says so first."""
    b = board_of(run.doc)
    if b.emulated:
        return f"emulated ({b.emulated}): timings are the emulator's, not a board's (INVALID)"
    name = f" ({b.name})" if b.name else ""
    return f"real hardware: {b.model or 'unknown model'}{name}"


def cross_isa_rows(run: Run) -> list[dict[str, Any]]:
    """One flat row per (entry, dataset, group) of a run's `cross_isa` block (harness/metrics/cross_isa.py)."""
    return paired_rows(run.doc.get("cross_isa") or {}, run.run_id)


def paired_rows(block: Mapping[str, Any], run_id: str) -> list[dict[str, Any]]:
    """One flat row per (entry, dataset, group) of a cross_isa_runs block (a run's `cross_isa`, or a drift block):
    the entry's largest output difference, decision flips "flips/n (b, c, McNemar p)" per decision, embedding
    cosine, and FMR/FNMR at the reference fp32 threshold as "reference -> device". The "isa" column names each
    side's arch and int8 kernel path (harness/kernel_path.py)."""
    def side(arch_key: str, kp_key: str) -> str:
        kp = block.get(kp_key)
        return f"{block.get(arch_key, '?')}" + (f" [{kp}]" if kp and kp != "unknown" else "")

    isa = f"{side('reference_arch', 'reference_kernel_path')} → {side('device_arch', 'device_kernel_path')}"
    if (block.get("emulation") or {}).get("by"):
        isa += f" ({block['emulation']['by']})"
    out = []
    for e in block.get("entries", []):
        flips: dict[str, list[str]] = {}
        for r in e.get("flips", []):
            flips.setdefault(r["group"], []).append(
                f"{r['metric']} {r['flips']}/{r['n']} (b{r['b']} c{r['c']}, p={r['p_value']:.3g})")
        drift = {r["group"]: r for r in e.get("drift", [])}
        rates: dict[str, dict[str, str]] = {}
        for r in e.get("error_rates", []):
            pair = f"{fmt(r['ref_value'], '.4f')} → {fmt(r['dev_value'], '.4f')}"
            rates.setdefault(r["group"], {})[r["metric"]] = pair
        groups = list(dict.fromkeys([*flips, *drift, *rates])) or ["all"]
        for g in groups:
            out.append({"run": run_id, "isa": isa, "entry": e["entry"], "dataset": e.get("dataset", "-"),
                        "group": g, "max_abs_diff": fmt(e.get("max_abs_diff"), ".3g") if g == "all" else "",
                        "flips": "; ".join(flips.get(g, [])) or "-",
                        "cos_mean": fmt(drift[g]["mean"], ".5f") if g in drift else "-",
                        "cos_min": fmt(drift[g]["min"], ".5f") if g in drift else "-",
                        "fmr": rates.get(g, {}).get("fmr", "-"), "fnmr": rates.get(g, {}).get("fnmr", "-")})
    return out


def procurement_front(cells: Sequence[EntrySummary]) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """Per model, the Pareto front over (p90 latency, worst-group error[, energy when every candidate has it]),
    all minimised. One model's accuracy error and another's FNMR are not comparable, so fronts never mix models.

    Candidates are ok entries with both latency and a worst group, measured VALID: an INVALID latency (throttled,
    wrong provider, emulated) is not a speed to buy on, so it is never Pareto-optimal. A variant that is faster but
    loses a group is on the front only if nothing is both as fast and as fair.
    """
    cand = [c for c in cells if c.status == "ok" and c.validity != "INVALID" and c.p90_ms is not None
            and c.worst_error is not None]
    with_energy = bool(cand) and all(c.energy_mj is not None for c in cand)
    axes = ("p90_ms", "worst_group_error") + (("energy_mj",) if with_energy else ())
    front: list[tuple[str, str]] = []
    for model in dict.fromkeys(c.model for c in cand):
        mine = [c for c in cand if c.model == model]
        pts = [[c.p90_ms, c.worst_error] + ([c.energy_mj] if with_energy else []) for c in mine]
        front += [(c.run_id, c.entry) for c, on in zip(mine, pareto_front(pts)) if on]
    return axes, front
