"""Time and peak memory of one entry's verification scoring on a stored run (issue 18: counts from mergeable partials).

    python tools/verification_cost.py RUN_DIR ENTRY DATASET [--mode partials|per-pair] [--repeat 3]
    python tools/verification_cost.py --synthetic N [--mode ...]   (N random 192-d embeddings, 2 a subject, 6 groups,
                                                                    as benchmarks/test_bench_metrics.py)

Scores the entry's stored embeddings on DATASET as `bench score` does (the dataset's default grouping, FMR 1e-3,
cut-offs 0.8/0.95/0.99, 1,000 subject resamples): `partials` is harness.metrics.verification_counts (two blocked
passes, counts only; what scoring uses), `per-pair` is pair_scores + threshold_at_fmr (every pair's score kept).
Run it with PYTHONPATH pointing at another checkout to measure that code's `per-pair` path (e.g. before a change).
Prints one line: wall time of each repeat, the peak of memory allocated during the step (tracemalloc, numpy's
allocations included), the process's peak RSS, the threshold and a digest of the rate rows (equal digests: the same
rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time
import tracemalloc
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?")
    ap.add_argument("entry", nargs="?")
    ap.add_argument("dataset", nargs="?")
    ap.add_argument("--synthetic", type=int, metavar="N")
    ap.add_argument("--mode", choices=("partials", "per-pair"), default="partials")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-tracemalloc", action="store_true", help="RSS only (tracemalloc slows numpy's allocations)")
    args = ap.parse_args()

    from harness import metrics

    if args.synthetic:
        import numpy as np

        rng = np.random.default_rng(0)
        emb = rng.standard_normal((args.synthetic, 192)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        subj = rng.permutation(np.repeat(np.arange(args.synthetic // 2), 2))
        subjects, groups, group_by = subj.astype(str), np.array([f"g{s % 6}" for s in subj]), ["group"]
    else:
        from harness import scoring
        from harness.watchlist import entry_embeddings

        doc = json.loads((args.run_dir / "run.json").read_text())
        record = next(d for d in doc["data"]["datasets"] if d["id"] == args.dataset)
        group_by = list(record["default_group_by"])
        df = scoring.load_samples(args.run_dir, args.entry)
        emb = entry_embeddings(args.run_dir, args.entry, df,
                               scoring._entry_records(args.run_dir, args.entry, None)[1])
        ok = ((df["status"] == "ok") & (df["dataset"] == args.dataset) & df["subject"].notna()).to_numpy()
        df, emb = df[ok].reset_index(drop=True), emb[ok]
        subjects = df["subject"].astype(str).to_numpy()
        groups = df[group_by].astype(str).agg("*".join, axis=1).to_numpy()
    cutoffs, target = (0.8, 0.95, 0.99), 1e-3

    def step():
        if args.mode == "partials":
            scores = metrics.verification_counts(emb, subjects, groups, group_by="*".join(group_by),
                                                 target_fmr=target, thresholds=cutoffs)
            t = scores.tuned
        else:
            scores = metrics.pair_scores(emb, subjects, groups, group_by="*".join(group_by))
            t = metrics.threshold_at_fmr(scores, target)
        rows = metrics.per_group_error_rates(scores, threshold=t, fixed_thresholds=cutoffs, target_fmr=target,
                                             n_boot=1000, seed=0)
        return t, rows, scores.n_impostor

    times, peaks = [], []
    for _ in range(args.repeat):
        if not args.no_tracemalloc:
            tracemalloc.start()
        start = time.perf_counter()
        t, rows, n_imp = step()
        times.append(time.perf_counter() - start)
        if not args.no_tracemalloc:
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:12]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.mode}: {len(emb)} embeddings, {n_imp:,} impostor pairs; times "
          f"{', '.join(f'{x:.3f}' for x in times)} s; "
          f"{f'step peak {max(peaks):.1f} MiB (tracemalloc); ' if peaks else ''}"
          f"process peak RSS {rss:.0f} MiB; threshold {t!r}; {len(rows)} rows, digest {digest}")


if __name__ == "__main__":
    main()
