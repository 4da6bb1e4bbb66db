"""Per-entry write cost of `bench run --store postgresql://...` (harness/results/pgwrite.py) against the whole-run
push it replaces (store.put of the run so far at every run.json write), for one run of 18 entries (3 models x 6
variants, the real writer and scorer: tests/unit/helpers_results.make_run), replayed as the orchestrator writes it
(tests/store/replay.py) into a throwaway PostgreSQL cluster (tests/store/pgserver.py).

Per run.json write: wall time (local write + store write; and the store's part alone), payload sent (documents as canonical JSON + file bytes)
and the server's WAL bytes (pg_current_wal_lsn before/after: what the server actually wrote).

    python tools/store_write_cost.py [--timings N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "store"), str(REPO / "tests" / "unit")]

MODELS = ("gender-dlib", "mobilefacenet", "blazeface")
VARIANTS = ("onnx-fp32", "onnx-fp16", "onnx-int8", "tflite-fp32", "tflite-fp16", "tflite-int8")  # 3 x 6 = 18


def _wal(uri: str) -> int:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as con:
        return int(con.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])


def _measure(src, writer, uri: str, payload, store_s: list[float]) -> list[dict]:
    """Replay src through writer, timing each run.json write; payload() -> bytes sent so far; store_s[0]: seconds
    spent in the store's part so far (the rest is the local write: schema validation, run.json, SQLite index)."""
    from replay import replay

    rows, orig = [], writer.write_run_json

    def timed(doc):
        before_wal, before_bytes, before_store = _wal(uri), payload(), store_s[0]
        t = time.perf_counter()
        orig(doc)
        dt = time.perf_counter() - t
        rows.append({"entries": len(doc.get("entries", [])), "status": doc["status"], "s": dt,
                     "store_s": store_s[0] - before_store, "payload": payload() - before_bytes,
                     "wal": _wal(uri) - before_wal})

    writer.write_run_json = timed
    with writer:
        replay(src, writer)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timings", type=int, default=300, help="raw timings per entry (default 300)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import tempfile

    from helpers_results import make_run
    from pgserver import TempCluster

    from harness.results.postgres import run_files
    from harness.results.store import RunStore, load_run
    from harness.results.uri import open_store
    from replay import header_of

    with tempfile.TemporaryDirectory() as tmp, TempCluster() as pg:
        tmp = Path(tmp)
        src = make_run(tmp / "src", models=MODELS, variants=VARIANTS, seed=0, n_timings=args.timings)
        store = open_store(pg.uri, results_dir=str(tmp / "spool"))
        store.ids()  # tables made before the first measured write

        # today: the run directory written locally, the whole run pushed at every run.json write
        old = RunStore(tmp / "old").create(header_of(src))
        sent = [0]
        local_write = old.write_run_json

        def push_whole(doc):  # as PushingRunWriter did: load the run folder, push it whole
            path = local_write(doc)
            t = time.perf_counter()
            run = load_run(old.path)
            sent[0] += len(json.dumps(run.doc, sort_keys=True, separators=(",", ":"))) + sum(
                len(b) for _, b in run_files(old.path))
            store.put(run)
            old_store_s[0] += time.perf_counter() - t
            return path

        old_store_s = [0.0]
        old.write_run_json = push_whole
        before = _measure(src, old, pg.uri, lambda: sent[0], old_store_s)

        # now: each changed entry in its own transaction
        new = store.create(header_of(src))
        new_store_s, through = [0.0], new.write_through

        def timed_through(**kw):
            t = time.perf_counter()
            through(**kw)
            new_store_s[0] += time.perf_counter() - t

        new.write_through = timed_through
        after = _measure(src, new, pg.uri, lambda: new.stats.doc_bytes + new.stats.file_bytes, new_store_s)
        store.close()

    def summary(rows):
        per_entry = [r for r in rows if r["status"] != "complete"]
        final = [r for r in rows if r["status"] == "complete"]
        return {"entry_writes": len(per_entry), "median_entry_write_s": statistics.median(r["s"] for r in per_entry),
                "max_entry_write_s": max(r["s"] for r in per_entry),
                "median_entry_store_s": statistics.median(r["store_s"] for r in per_entry),
                "max_entry_store_s": max(r["store_s"] for r in per_entry),
                "median_entry_payload_bytes": statistics.median(r["payload"] for r in per_entry),
                "last_entry_payload_bytes": per_entry[-1]["payload"],
                "median_entry_wal_bytes": statistics.median(r["wal"] for r in per_entry),
                "final_write_s": final[0]["s"], "final_payload_bytes": final[0]["payload"],
                "total_s": sum(r["s"] for r in rows), "total_payload_bytes": sum(r["payload"] for r in rows),
                "total_wal_bytes": sum(r["wal"] for r in rows)}

    out = {"entries": len(src.entries), "timings_per_entry": args.timings,
           "whole_run_push": summary(before), "per_entry_write": summary(after),
           "per_write": {"whole_run_push": before, "per_entry_write": after}}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"one run of {out['entries']} entries ({args.timings} timings each), replayed write by write")
    print(f"{'':34s}{'whole-run push':>16s}{'per-entry write':>17s}")
    b, a = out["whole_run_push"], out["per_entry_write"]
    for key, label, fmt in (("median_entry_write_s", "entry write, median (s)", "{:.3f}"),
                            ("max_entry_write_s", "entry write, max (s)", "{:.3f}"),
                            ("median_entry_store_s", "  of it the store, median (s)", "{:.3f}"),
                            ("max_entry_store_s", "  of it the store, max (s)", "{:.3f}"),
                            ("median_entry_payload_bytes", "entry write payload, median (kB)", "{:.0f}"),
                            ("last_entry_payload_bytes", "18th entry write payload (kB)", "{:.0f}"),
                            ("median_entry_wal_bytes", "entry write WAL, median (kB)", "{:.0f}"),
                            ("final_write_s", "complete run write (s)", "{:.3f}"),
                            ("final_payload_bytes", "complete run write payload (kB)", "{:.0f}"),
                            ("total_s", "whole run, all writes (s)", "{:.2f}"),
                            ("total_payload_bytes", "whole run payload (kB)", "{:.0f}"),
                            ("total_wal_bytes", "whole run WAL (kB)", "{:.0f}")):
        scale = 1024 if "bytes" in key else 1
        print(f"{label:34s}{fmt.format(b[key] / scale):>16s}{fmt.format(a[key] / scale):>17s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
