"""`bench score RUN`: re-score a stored run from its raw outputs, with no device and no images.

Reads the run folder's per-sample records (samples/<entry>.jsonl), embedding arrays (embeddings/<entry>.npy) and
the settings and splits run.json recorded, runs the same scoring stage `bench run` ends with (harness/scoring.py:
rates, verification, identification, precision loss against the reference), and rewrites run.json. A run with no
stored raw outputs is refused in one line (exit 2). `--scheduler ADDRESS` runs the 1:N search scoring on a Dask
distributed cluster (harness/search_cluster.py; 'local' starts two workers here); the rows are identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_OK, InputError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("score", help="re-score a stored run from its raw outputs (no device)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run id (or a unique prefix) under the results folder, or its path")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run the 1:N search scoring on a Dask distributed cluster "
                   "(tcp://HOST:PORT), or 'local' for a two-worker cluster on this host (the [cluster] extra)")
    p.set_defaults(func=run)
    return p


def has_raw_outputs(run_dir: Path, doc: dict) -> bool:
    """Every ok entry has its per-sample records, and there is at least one ok entry."""
    ok = [e for e in doc.get("entries", []) if e.get("status") == "ok"]
    return bool(ok) and all((run_dir / "samples" / f"{e['entry']}.jsonl").is_file() for e in ok)


def rescore(run_dir: Path, *, results_root: Path, searcher=None) -> dict:
    """Score the run at run_dir again and write its run.json; returns the new document."""
    from harness.results.store import RunStore, load_run
    from harness.scenarios.orchestrate import RunConfig, _lock_run
    from harness.scoring import score_run

    run = load_run(run_dir)
    if not has_raw_outputs(run.path, run.doc):
        raise InputError(f"{run.path}: run {run.run_id} has no stored raw outputs (samples/<entry>.jsonl for its ok "
                         "entries); nothing to re-score")
    lock = _lock_run(run.path)
    try:
        writer = RunStore(run.path.parent).open_existing(run.run_id)
        doc = writer.read_run_json()
        cfg = RunConfig.from_dict(doc["settings"])
        doc = score_run(run.path, doc, cfg, results_root=results_root, searcher=searcher)
        writer.write_run_json(doc)
        writer.close()
    finally:
        lock.close()
    return doc


def summary_lines(doc: dict) -> list[str]:
    """One line per entry x watchlist dataset x threshold: overall FPIR and FNIR of its own gallery."""
    out = []
    for e in doc.get("entries", []):
        for dataset, sec in ((e.get("metrics") or {}).get("identification") or {}).items():
            rows = (sec.get("own_gallery") or {}).get("rates", [])
            for t in sec.get("thresholds", []):
                vals = {r["metric"]: r for r in rows if r["group"] == "all" and r.get("threshold") == t["value"]}
                fpir, fnir = vals.get("fpir"), vals.get("fnir")
                out.append(f"{e['entry']} {dataset} {t['kind']} t={t['value']:.4f}: "
                           f"FPIR {_fmt(fpir)}  FNIR(rank {sec['rank_r']}) {_fmt(fnir)}")
    return out


def _fmt(row: dict | None) -> str:
    if not row or row.get("value") is None:
        return "n/a"
    return f"{row['value']:.4f} [{row['ci_lo']:.4f}, {row['ci_hi']:.4f}] ({row['k']}/{row['n']})"


def run(args: argparse.Namespace) -> int:
    from harness.paths import results_root
    from harness.results.store import resolve_run

    results = results_root(args.results_dir).path
    run_dir = resolve_run(args.run, results)
    client = None
    searcher = None
    if args.scheduler:
        from harness.search_cluster import connect, searcher as cluster_searcher

        client = connect(args.scheduler)  # a scheduler that does not answer: one line, exit 3, before any work
        searcher = cluster_searcher(client)
    try:
        doc = rescore(run_dir, results_root=results, searcher=searcher)
    finally:
        if client is not None:
            client.close()
    for line in summary_lines(doc):
        print(line, file=sys.stderr)
    print(run_dir)
    return EXIT_OK
