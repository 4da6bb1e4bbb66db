#!/usr/bin/env python3
"""What moving verification onto the 1:N scorer's 2^-20 grid (issue 18) changed in a stored run's rows.

  python tools/grid_rows.py RUN_DIR

Scores RUN_DIR's run twice in memory (nothing is written): as `bench score` does now (pair scores from
harness.metrics.search: unit rows on the grid, exact float64 `similarity`), and as verification scored before
issue 18 (float32 unit rows multiplied in float32, no grid). Prints, per verification entry and dataset, both tuned
thresholds (before -> now), and which fields of the FMR/FNMR rows, the paired rows and the threshold-transfer rows
differ. tests/e2e/test_verification_scorer_e2e.py checks the same on a fresh london-frl run.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEYS = ("metric", "group_by", "group", "threshold_kind", "n", "k", "value", "ci_lo", "ci_hi", "n_units", "n_subjects",
        "pair_value", "pair_ci_lo", "pair_ci_hi", "n_valid", "ci_method")


def differing(a: list[dict], b: list[dict], keys=None) -> list[str]:
    if len(a) != len(b):
        return [f"row count {len(a)} != {len(b)}"]
    return sorted({k for x, y in zip(a, b) for k in (keys or set(x) | set(y)) if x.get(k) != y.get(k)})


def main() -> int:
    from harness import scoring
    from harness.metrics import verification
    from harness.results.store import load_run
    from harness.scenarios.orchestrate import RunConfig

    run = load_run(Path(sys.argv[1]))
    cfg = RunConfig.from_dict(run.doc["settings"])
    grid = scoring.score_run(run.path, copy.deepcopy(run.doc), cfg)
    on_grid = verification._grid_rows

    def previous_rows(emb):
        e = np.asarray(emb, dtype=np.float32)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    verification._grid_rows = previous_rows
    try:
        plain = scoring.score_run(run.path, copy.deepcopy(run.doc), cfg)
    finally:
        verification._grid_rows = on_grid
    for a, b in zip(plain["entries"], grid["entries"]):
        if a.get("task") != "verification" or a.get("status") != "ok":
            continue
        for ds, v in a["metrics"]["verification"].items():
            t = b["metrics"]["verification"][ds]["threshold"]
            print(f"{a['entry']} {ds}: tuned threshold {v['threshold']!r} -> {t!r} ({t - v['threshold']:+.2e})")
        rates = [[r for r in e["metrics"]["rates"] if r["metric"] in ("fmr", "fnmr", "fmr_cross")] for e in (a, b)]
        print(f"  {len(rates[0])} FMR/FNMR rows; fields other than the threshold that differ: "
              f"{differing(*rates, KEYS) or 'none'}")
        for part in ("paired_rates", "threshold_transfer"):
            rows = [e["metrics"]["reference"][part] for e in (a, b)]
            print(f"  {len(rows[0])} {part} rows; fields that differ: {differing(*rows) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
