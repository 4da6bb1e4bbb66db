"""The relational projection of a run.json document: entry, speed, rate and environment rows.

One definition for the PostgreSQL store's tables (harness/results/postgres.py: efb_<table>) and `bench export`
(Parquet/CSV), so a column means the same thing in SQL, pandas and DuckDB. Rate rows keep every context column
harness.metrics writes that a query filters on (dataset, threshold kind and value, interval method, status);
the group column is `grp` (GROUP is an SQL keyword).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

RATE_COLS = ("run_id", "entry", "dataset", "metric", "group_by", "grp", "threshold_kind", "threshold", "value",
              "ci_lo", "ci_hi", "n", "k", "n_subjects", "small", "unit", "ci_method", "status", "reason")
SPEED_COLS = ("run_id", "entry", "init_ms", "first_inference_ms", "count", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
              "throughput_ips", "energy_mj", "rss_peak_mb", "validity", "validity_reasons")
ENTRY_COLS = ("run_id", "entry", "model", "variant", "task", "status", "reason", "model_sha256", "runtime",
              "provider_requested", "providers_active")
ENVIRONMENT_COLS = ("run_id", "key", "value")
COLUMNS = {"entries": ENTRY_COLS, "speed": SPEED_COLS, "rates": RATE_COLS, "environment": ENVIRONMENT_COLS}
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


def rows_for(doc: Mapping[str, Any]) -> dict[str, list[tuple]]:
    """The relational rows of one run.json document (entries, speed, rates, environment)."""
    rid = doc["run_id"]
    entries, speed, rates = [], [], []
    for e in doc.get("entries", []):
        backend = e.get("backend") or {}
        active = backend.get("active")
        entries.append((rid, e["entry"], e["model"], e["variant"], e.get("task"), e["status"], e.get("reason"),
                        e.get("model_sha256"), backend.get("runtime"), backend.get("requested"),
                        [str(a) for a in active] if isinstance(active, list) else None))
        s = e.get("speed") or {}
        ss, off, val = s.get("single_stream") or {}, s.get("offline") or {}, s.get("validity") or {}
        speed.append((rid, e["entry"], _num(s.get("init_ms")), _num(s.get("first_inference_ms")),
                      ss.get("count"), _num(ss.get("p50_ms")), _num(ss.get("p90_ms")), _num(ss.get("p99_ms")),
                      _num(ss.get("mean_ms")), _num(off.get("throughput_ips")),
                      _num(s.get("energy_mj_per_inference")), _num((s.get("memory") or {}).get("rss_peak_mb")),
                      val.get("status"), list(val.get("reasons") or [])))
        for r in (e.get("metrics") or {}).get("rates") or []:
            rates.append((rid, e["entry"], r.get("dataset"), r["metric"], r["group_by"], r["group"],
                          r.get("threshold_kind"), _num(r.get("threshold")), _num(r.get("value")),
                          _num(r.get("ci_lo")), _num(r.get("ci_hi")), r.get("n"), _num(r.get("k")),
                          r.get("n_subjects"), r.get("small"), r.get("unit"), r.get("ci_method"), r.get("status"),
                          r.get("reason")))
    env = [(rid, k, json.dumps(v)) for k, v in _flatten(doc.get("environment") or {})]
    return {"entries": entries, "speed": speed, "rates": rates, "environment": env}


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
