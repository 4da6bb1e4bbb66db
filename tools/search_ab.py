#!/usr/bin/env python3
"""The 1:N scorer of another commit against this checkout's, in one process, alternating rounds.

  python tools/search_ab.py 9e527c5 [--dim 128] [--probes 2048] [--gallery 32768] [--rounds 4]

On a shared host the load moves between separate benchmark runs more than a scorer change moves the time, so this
loads REV's harness/metrics/search.py (`git show`; the modules it imports, search_kernel.py included, are this
checkout's, so compare kernel changes another way) beside this checkout's, runs both on the same synthetic unit
templates (top-20, cut-offs 0.8/0.95/0.99, four nested sizes, 8 probe groups, default blocks) round after round
with the bare blocked GEMM (float64 and float32, 1,024 x 4,096 blocks) between them, and prints the minimum of
each with the ratios benchmarks/test_bench_search.py reports; it also checks the two give identical partials.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIELDS = ("top_score", "top_index", "mate_score", "prefix_max", "exceed", "hist")


def load_rev(rev: str):
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:harness/metrics/search.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "search_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("search_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_rev"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--probes", type=int, default=2048)
    ap.add_argument("--gallery", type=int, default=32768)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    from harness.metrics import search as here

    there = load_rev(a.rev)
    rng = np.random.default_rng(0)

    def unit(n):
        x = rng.standard_normal((n, a.dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    P, G = unit(a.probes), unit(a.gallery)
    mates, groups = rng.integers(-1, a.gallery, a.probes), rng.integers(0, 8, a.probes)
    kw = dict(k=20, thresholds=(0.8, 0.95, 0.99), sizes=(100, 1_000, 10_000, a.gallery))
    Pq, Gq = here.quantize(P), here.quantize(G)

    def gemm(dtype):
        p, g = Pq.astype(dtype), Gq.astype(dtype)
        out = np.empty((1024, 4096), dtype)
        t0 = time.perf_counter()
        for p0 in range(0, len(p), 1024):
            for g0 in range(0, len(g), 4096):
                x, y = p[p0:p0 + 1024], g[g0:g0 + 4096]
                np.matmul(x, y.T, out=out[:len(x), :len(y)])
        return time.perf_counter() - t0

    best: dict[str, float] = {}
    results = {}
    for _ in range(a.rounds):
        for name, fn in (("gemm_f64", lambda: gemm(np.float64)), ("gemm_f32", lambda: gemm(np.float32)),
                         (a.rev, lambda: there.search(P, G, mates, groups, 8, there.SearchSettings(**kw))),
                         ("here", lambda: here.search(P, G, mates, groups, 8, here.SearchSettings(**kw)))):
            t0 = time.perf_counter()
            results[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    same = all(np.array_equal(getattr(results[a.rev], f), getattr(results["here"], f)) for f in FIELDS)
    n = a.probes * a.gallery
    print(f"dim {a.dim}, {a.probes} x {a.gallery} = {n:.2e} comparisons, min of {a.rounds} rounds: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()) + f"; identical partials: {same}")
    for name in (a.rev, "here"):
        print(f"  {name}: {n / best[name]:.3g} comparisons/s, {best['gemm_f64'] / best[name]:.2f} of float64 GEMM, "
              f"{best['gemm_f32'] / best[name]:.2f} of float32 GEMM")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
