"""The relational projection of a run.json document: entry, speed, rate, identification and environment rows.

One definition for the PostgreSQL store's tables (harness/results/postgres.py: efb_<table>) and `bench export`
(Parquet/CSV), so a column means the same thing in SQL, pandas and DuckDB. Rate rows keep every context column
harness.metrics writes that a query filters on (dataset, threshold kind and value, interval method, status);
the group column is `grp` (GROUP is an SQL keyword).

Identification (1:N watchlist search, issue 18; harness/watchlist.py writes `metrics.identification.<dataset>` of
each embedding entry) becomes four tables, every row tagged with its dataset and search configuration (`config`:
`own_gallery`, the variant's own watchlist; `reference_gallery`, the fp32 watchlist searched by the variant's
probes):
- identification: FPIR, FNIR (at rank `rank`) and rank-1/rank-10 hit rates per probe group at each threshold, with
  n searches, k errors (hits for the hit rates), n_subjects, the subject-weighted value and its interval, and
  `search_value` = k/n; n_gallery/n_distractors say which watchlist it was;
- identification_gallery_size: FPIR on nested galleries, `kind` 'measured' (with interval and counts) or 'model'
  (the independent-comparisons extension, with the non-mate comparisons it rests on), never mixed;
- identification_flips: decision flips against fp32 per group, threshold and search kind (b: fp32 right, variant
  wrong; c: the reverse) with the exact McNemar p;
- identification_false_candidates: per probe group and group of the rank-1 false candidate, the searches at t.
A section that could not be computed (no reference entry) has no rows; its reason stays in run.json.

The search itself, timed on the board (harness/search_job.py), is the `search_speed` table (search_speed_records):
per entry, dataset and gallery size the single-probe latency (count, p50 with its CI, p90, p99) and its validity,
the gallery's storage precision, its bytes and the worker's RSS growth (store schema 4). The stored gallery's top-1
against float32's (`top1_vs_fp32`) joins the identification rows with config `device_search`.

Energy (issue 21): the speed row carries the gross energy per inference (`energy_mj`, idle power included) with its
interval, and beside it the energy above idle (run.json `speed.energy_above_idle`, harness/metrics/energy.py): the
idle power and its reading count, the net power and net energy per inference with their 95% Welch intervals, and
why a net figure or its interval is missing (energy_record, store schema 6). The reports and `bench compare` read
the same projection (harness/report/summary.py), so a column means the same thing in SQL, pandas and the tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

RATE_COLS = ("run_id", "entry", "dataset", "metric", "group_by", "grp", "threshold_kind", "threshold", "value",
              "ci_lo", "ci_hi", "n", "k", "n_subjects", "small", "unit", "ci_method", "status", "reason")
# The energy above idle beside the gross figure (energy_record): the speed table's last columns (store schema 6).
ENERGY_COLS = ("energy_ci_lo_mj", "energy_ci_hi_mj", "idle_mw", "idle_readings", "net_mw", "net_ci_lo_mw",
               "net_ci_hi_mw", "net_energy_mj", "net_energy_ci_lo_mj", "net_energy_ci_hi_mj", "net_energy_reason")
SPEED_COLS = ("run_id", "entry", "init_ms", "first_inference_ms", "count", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
              "throughput_ips", "energy_mj", "rss_peak_mb", "validity", "validity_reasons") + ENERGY_COLS
ENTRY_COLS = ("run_id", "entry", "model", "variant", "task", "status", "reason", "model_sha256", "runtime",
              "provider_requested", "providers_active")
ENVIRONMENT_COLS = ("run_id", "key", "value")
IDENT_COLS = ("run_id", "entry", "dataset", "config", "metric", "group_by", "grp", "threshold_kind", "threshold",
              "rank", "value", "ci_lo", "ci_hi", "n", "k", "n_subjects", "search_value", "small", "unit", "ci_method",
              "status", "reason", "n_gallery", "n_distractors")
IDENT_SIZE_COLS = ("run_id", "entry", "dataset", "config", "kind", "gallery_size", "metric", "group_by", "grp",
                   "threshold_kind", "threshold", "value", "ci_lo", "ci_hi", "n", "k", "n_subjects", "small",
                   "ci_method", "n_comparisons", "k_comparisons", "p_t")
IDENT_FLIP_COLS = ("run_id", "entry", "dataset", "config", "metric", "group_by", "grp", "threshold_kind", "threshold",
                   "n", "flips", "b", "c", "p_value", "reference_entry", "reference_run")
IDENT_FALSE_COLS = ("run_id", "entry", "dataset", "config", "threshold_kind", "threshold", "probe_group",
                    "candidate_group", "n_false", "n_searches")
IDENT_COLUMNS = {"identification": IDENT_COLS, "identification_gallery_size": IDENT_SIZE_COLS,
                 "identification_flips": IDENT_FLIP_COLS, "identification_false_candidates": IDENT_FALSE_COLS}
# The watchlist search timed on the board (harness/search_job.py, run.json entries[].speed.search.<dataset>): one row
# per entry, dataset and gallery size, or one row with no size for a search that failed or was not computable.
# Store schema 4 added precision (the gallery's storage precision on the board), gallery_bytes and rss_growth_mb.
SEARCH_SPEED_COLS = ("run_id", "entry", "dataset", "gallery_size", "synthetic", "k", "dim", "n_probes", "count",
                     "p50_ms", "p50_ci_lo_ms", "p50_ci_hi_ms", "p90_ms", "p99_ms", "validity", "validity_reasons",
                     "topk_agree", "topk_probes", "blas_threads_requested", "blas_threads_used", "status", "reason",
                     "precision", "gallery_bytes", "rss_growth_mb")
COLUMNS = {"entries": ENTRY_COLS, "speed": SPEED_COLS, "rates": RATE_COLS, "environment": ENVIRONMENT_COLS,
           **IDENT_COLUMNS, "search_speed": SEARCH_SPEED_COLS}
IDENT_CONFIGS = ("own_gallery", "reference_gallery")
# identification rows of the search on the board (metric top1_differs_from_fp32: its stored gallery's top-1 against
# float32's, harness/search_job.py `fidelity`), from entries[].speed.search.<dataset>.top1_vs_fp32
DEVICE_SEARCH_CONFIG = "device_search"
_FLOAT_COLS = {"threshold", "value", "ci_lo", "ci_hi", "search_value", "p_value", "p_t"}
# `bench export`'s runs table (not a store table: the store keeps each run's document itself): one row per run, the
# board as the reports name it, where its figures come from (harness/results/provenance.py) and the machine's
# fingerprint, summarised and as its sha256 (the full fingerprint is the environment table).
RUN_COLS = ("run_id", "board", "target", "provenance", "provenance_reason", "created_utc", "status", "commit",
            "device_model", "cpu_model", "cpu_arch", "int8_kernel_path", "runtimes", "fingerprint_sha256")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _bounds(v: Any) -> tuple[float | None, float | None]:
    if isinstance(v, (list, tuple)) and len(v) == 2 and None not in (_finite(v[0]), _finite(v[1])):
        return _finite(v[0]), _finite(v[1])
    return None, None


def energy_record(speed: Mapping[str, Any] | None) -> dict[str, Any]:
    """An entry's energy above idle as ENERGY_COLS (run.json `speed.energy_above_idle`, harness/metrics/energy.py):
    the gross energy's 95% interval (`energy_ci_lo_mj`/`energy_ci_hi_mj`, beside `energy_mj`), the idle power and
    how many readings it rests on, the net power and net energy per inference with their Welch intervals, and
    `net_energy_reason`: why the net figure, or else its interval, is missing. Everything null where the run has no
    such block (a run made before it, a failed entry). A board's figures: a value that is not a finite number, or
    an interval that is not two of them, is null; the reason is kept as text."""
    net = (speed or {}).get("energy_above_idle") if isinstance(speed, Mapping) else None
    out: dict[str, Any] = dict.fromkeys(ENERGY_COLS)
    if not isinstance(net, Mapping):
        return out
    n_idle = net.get("idle_readings")
    out["energy_ci_lo_mj"], out["energy_ci_hi_mj"] = _bounds(net.get("gross_energy_ci_mj"))
    out["idle_mw"] = _finite(net.get("idle_mw"))
    out["idle_readings"] = n_idle if isinstance(n_idle, int) and not isinstance(n_idle, bool) and n_idle >= 0 else None
    out["net_mw"] = _finite(net.get("net_mw"))
    out["net_ci_lo_mw"], out["net_ci_hi_mw"] = _bounds(net.get("net_ci_mw"))
    out["net_energy_mj"] = _finite(net.get("energy_mj_per_inference"))
    out["net_energy_ci_lo_mj"], out["net_energy_ci_hi_mj"] = _bounds(net.get("energy_ci_mj"))
    why = net.get("reason") or net.get("interval_reason")
    out["net_energy_reason"] = None if why is None else str(why)
    return out


def identification_sections(entry: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(dataset, section) of each computed watchlist section of an entry (sections with a status, i.e. not
    computable, are left out)."""
    for dataset, sec in sorted(((entry.get("metrics") or {}).get("identification") or {}).items()):
        if isinstance(sec, Mapping) and "status" not in sec:
            yield dataset, sec


def identification_records(entry: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per identification table, the entry's rows as dicts: the metric rows as harness.watchlist wrote them, with
    their dataset and config (and, per table, the watchlist size or the reference) added. `bench report -o x.csv`
    takes the `identification` dicts; rows_for turns every table into tuples of its columns."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in IDENT_COLUMNS}
    for dataset, sec in identification_sections(entry):
        ref = sec.get("reference") or {}
        for config in IDENT_CONFIGS:
            part = sec.get(config)
            if not isinstance(part, Mapping):
                continue
            ctx = {"dataset": dataset, "config": config}
            rates = part.get("rates") or []
            group_by = next((r.get("group_by") for r in rates), None)
            out["identification"] += [{**r, **ctx, "n_gallery": sec.get("n_gallery"),
                                       "n_distractors": sec.get("n_distractors")} for r in rates]
            out["identification_gallery_size"] += [{**r, **ctx} for r in part.get("fpir_by_gallery_size") or []]
            out["identification_gallery_size"] += [{"metric": "fpir", "group_by": group_by, **r, **ctx}
                                                   for r in part.get("fpir_by_gallery_size_model") or []]
            out["identification_false_candidates"] += [{**r, **ctx} for r in part.get("false_candidates") or []]
        out["identification_flips"] += [{**r, "dataset": dataset, "reference_entry": ref.get("entry"),
                                         "reference_run": ref.get("run")} for r in sec.get("flips") or []]
    for dataset, rec in sorted((((entry.get("speed") or {}).get("search")) or {}).items()):
        top1 = rec.get("top1_vs_fp32") if isinstance(rec, Mapping) else None
        if isinstance(top1, Mapping):  # the board's stored gallery against float32: a fidelity rate, per group
            out["identification"] += [{**r, "dataset": dataset, "config": DEVICE_SEARCH_CONFIG,
                                       "n_gallery": rec.get("n_watchlist")} for r in top1.get("rows") or []]
    return out


def search_speed_records(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entry's on-board search latency as SEARCH_SPEED_COLS dicts (less run_id and entry), per dataset and
    gallery size in the order timed: count, p50 with the distribution-free CI of the median, p90, p99, the
    VALID/INVALID verdict with its reasons, how many probes' top-k agreed with the host scorer's, and the BLAS
    threads asked for and reported (as text: a count, "runtime default", "as requested"). A search that failed or
    was not computable is one row with its status and reason and no size. Used by `bench export`, the PostgreSQL
    store, the report's "Identification (1:N)" section and the console."""
    out: list[dict[str, Any]] = []
    for dataset, rec in sorted((((entry.get("speed") or {}).get("search")) or {}).items()):
        if not isinstance(rec, Mapping):
            continue
        status = rec.get("status")
        if status != "ok":
            kind = rec.get("kind")
            why = rec.get("reason")
            out.append({"dataset": dataset, "status": status, "reason": f"{kind}: {why}" if kind else why})
            continue
        blas = rec.get("blas_threads") if isinstance(rec.get("blas_threads"), Mapping) else {}
        check = rec.get("topk_check") if isinstance(rec.get("topk_check"), Mapping) else {}
        base = {"dataset": dataset, "k": rec.get("k"), "dim": rec.get("dim"), "n_probes": rec.get("n_probes"),
                "precision": rec.get("precision", "fp32"),
                "blas_threads_requested": None if blas.get("requested") is None else str(blas["requested"]),
                "blas_threads_used": None if blas.get("used") is None else str(blas["used"]), "status": status,
                "reason": None}
        for size in rec.get("sizes") or []:
            ss, val = size.get("single_stream") or {}, size.get("validity") or {}
            ci = ss.get("p50_ci_ms") if isinstance(ss.get("p50_ci_ms"), (list, tuple)) else (None, None)
            mem = size.get("memory") if isinstance(size.get("memory"), Mapping) else {}
            # the size's own top-k check (its check probes; older runs: none), the watchlist's (every probe) on the
            # watchlist's own size and on runs that checked only that
            own = size.get("topk_check") if isinstance(size.get("topk_check"), Mapping) else None
            chk = check if own is None or size.get("size") == rec.get("n_watchlist") else own
            out.append({**base, "gallery_size": size.get("size"), "synthetic": size.get("synthetic"),
                        "topk_agree": chk.get("agree"), "topk_probes": chk.get("probes"),
                        "gallery_bytes": mem.get("gallery_bytes"), "rss_growth_mb": _num(mem.get("rss_growth_mb")),
                        "count": ss.get("count"), "p50_ms": _num(ss.get("p50_ms")), "p50_ci_lo_ms": _num(ci[0]),
                        "p50_ci_hi_ms": _num(ci[1]), "p90_ms": _num(ss.get("p90_ms")),
                        "p99_ms": _num(ss.get("p99_ms")), "validity": val.get("status"),
                        "validity_reasons": [str(r) for r in val.get("reasons") or []]})
    return out


def search_speed_rows(rid: str, entry: Mapping[str, Any]) -> list[tuple]:
    """search_speed_records of one entry as tuples of SEARCH_SPEED_COLS."""
    return [tuple({"run_id": rid, "entry": entry["entry"], **r}.get(c) for c in SEARCH_SPEED_COLS)
            for r in search_speed_records(entry)]


def _tuple(rid: str, entry: str, row: Mapping[str, Any], cols: tuple[str, ...]) -> tuple:
    """A row dict as a tuple of `cols`: run_id and entry given, `grp` from "group", floats as floats."""
    values = {"run_id": rid, "entry": entry, "grp": row.get("group")}
    return tuple(values[c] if c in values else _num(row.get(c)) if c in _FLOAT_COLS else row.get(c) for c in cols)


def identification_rows(rid: str, entry: Mapping[str, Any]) -> dict[str, list[tuple]]:
    """Per identification table, the rows of one entry as tuples of the table's columns."""
    return {table: [_tuple(rid, entry["entry"], r, IDENT_COLUMNS[table]) for r in records]
            for table, records in identification_records(entry).items()}


def entry_rows(rid: str, e: Mapping[str, Any]) -> dict[str, list[tuple]]:
    """The relational rows of one entry of a run (entries, speed, rates, identification tables, search speed), the
    entries row first (the other tables reference it). The PostgreSQL store writes these per entry as it finishes
    (harness/results/pgwrite.py) and rows_for is their union over a run, so a push and a write-through agree."""
    backend = e.get("backend") or {}
    active = backend.get("active")
    entries = [(rid, e["entry"], e["model"], e["variant"], e.get("task"), e["status"], e.get("reason"),
                e.get("model_sha256"), backend.get("runtime"), backend.get("requested"),
                [str(a) for a in active] if isinstance(active, list) else None)]
    s = e.get("speed") or {}
    ss, off, val = s.get("single_stream") or {}, s.get("offline") or {}, s.get("validity") or {}
    speed = [(rid, e["entry"], _num(s.get("init_ms")), _num(s.get("first_inference_ms")),
              ss.get("count"), _num(ss.get("p50_ms")), _num(ss.get("p90_ms")), _num(ss.get("p99_ms")),
              _num(ss.get("mean_ms")), _num(off.get("throughput_ips")),
              _num(s.get("energy_mj_per_inference")), _num((s.get("memory") or {}).get("rss_peak_mb")),
              val.get("status"), list(val.get("reasons") or []), *energy_record(s).values())]
    rates = [(rid, e["entry"], r.get("dataset"), r["metric"], r["group_by"], r["group"],
              r.get("threshold_kind"), _num(r.get("threshold")), _num(r.get("value")),
              _num(r.get("ci_lo")), _num(r.get("ci_hi")), r.get("n"), _num(r.get("k")),
              r.get("n_subjects"), r.get("small"), r.get("unit"), r.get("ci_method"), r.get("status"),
              r.get("reason")) for r in (e.get("metrics") or {}).get("rates") or []]
    return {"entries": entries, "speed": speed, "rates": rates, **identification_rows(rid, e),
            "search_speed": search_speed_rows(rid, e)}


def environment_rows(doc: Mapping[str, Any]) -> list[tuple]:
    """The run's environment fingerprint as (run_id, dotted key, JSON value) rows."""
    return [(doc["run_id"], k, json.dumps(v)) for k, v in _flatten(doc.get("environment") or {})]


def rows_for(doc: Mapping[str, Any]) -> dict[str, list[tuple]]:
    """The relational rows of one run.json document (entries, speed, rates, identification tables, environment)."""
    rid = doc["run_id"]
    out: dict[str, list[tuple]] = {"entries": [], "speed": [], "rates": [], "environment": environment_rows(doc),
                                   **{t: [] for t in IDENT_COLUMNS}, "search_speed": []}
    for e in doc.get("entries", []):
        for table, part in entry_rows(rid, e).items():
            out[table] += part
    return out


def run_row(doc: Mapping[str, Any]) -> tuple:
    """The runs-table row of one run.json document (RUN_COLS). Fingerprint values are a board's data: kept as
    text, only known shapes read."""
    from harness.results.provenance import board, fingerprint, fingerprint_sha256, provenance, target

    fp = fingerprint(doc)
    cpu = fp.get("cpu") if isinstance(fp.get("cpu"), dict) else {}
    dev = fp.get("device") if isinstance(fp.get("device"), dict) else {}
    kp = fp.get("kernel_path") if isinstance(fp.get("kernel_path"), dict) else {}
    rts = fp.get("runtimes") if isinstance(fp.get("runtimes"), dict) else {}
    git = ((doc.get("environment") or {}).get("git") or {}) if isinstance(doc.get("environment"), dict) else {}
    kind, why = provenance(doc)

    def text(v: Any) -> str | None:
        return None if v is None else str(v)

    return (doc["run_id"], board(doc), target(doc), kind, why, doc.get("created_utc"), doc.get("status"),
            text(git.get("commit") if isinstance(git, dict) else None), text(dev.get("model")), text(cpu.get("model")),
            text(cpu.get("arch")), text(kp.get("int8_label") or kp.get("int8")),
            json.dumps(rts, sort_keys=True) if rts else None, fingerprint_sha256(doc))
