"""Single-stream latency of every built model x variant on this machine's CPU target, as a comparable JSON file.

Run: python -m pytest benchmarks/test_bench_variants.py -q --benchmark-json variants.json

Each variant loads through make_runner with the `cpu` target's backend (onnxruntime CPU EP / LiteRT XNNPACK,
runtime-default threads), exactly as `bench run --target cpu` would, and pytest-benchmark times runner.infer on one
prepared real input (the call measure_loop times in a run). The median and the rest of the run.json
single_stream summary go into extra_info. Nothing is asserted about speed beyond sanity (finite, positive,
enough calls): the figures belong to the machine and its load, and are compared across runs with
`pytest-benchmark compare`, not against constants. A variant the pack marks failed or missing is skipped
with its reason. About 1 s of timed calls per variant keeps the 17 built variants near 30 s.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from harness import specs
from harness.models.pack import variant_path, variant_status
from harness.runners import make_runner
from harness.trackers.latency import LatencyStats

TARGET = "cpu"
SECONDS_PER_VARIANT = 1.0
MIN_CALLS, MAX_CALLS = 30, 5000
WARMUP_CALLS = 10

CASES = [(m, v) for m in specs.model_ids() for v in specs.VARIANTS]


@pytest.mark.slow
@pytest.mark.benchmark(group="variant-latency")
@pytest.mark.parametrize(("model_id", "variant"), CASES, ids=[f"{m}--{v}" for m, v in CASES])
def test_variant_single_stream(benchmark, built_packs: Path, model_input, model_id: str, variant: str):
    model = specs.get_model(model_id)
    if variant not in model.variants:
        pytest.skip(f"{model_id} declares no {variant} variant")
    status = variant_status(built_packs, model, variant)
    if status.status != "built":
        pytest.skip(f"{model_id}--{variant}: {status.status} ({status.reason})")
    backend = specs.get_target(TARGET).backend_for(variant)

    runner = make_runner(backend, variant_path(built_packs, model_id, variant))
    prepared, n_real = runner.prepare(model_input(model_id))
    t0 = time.perf_counter()
    for _ in range(WARMUP_CALLS):
        runner.infer(prepared)
    per_call_s = (time.perf_counter() - t0) / WARMUP_CALLS
    calls = min(MAX_CALLS, max(MIN_CALLS, math.ceil(SECONDS_PER_VARIANT / per_call_s)))

    benchmark.pedantic(runner.infer, args=(prepared,), rounds=calls, iterations=1)
    stats = LatencyStats.from_ms(np.asarray(benchmark.stats.stats.data) * 1e3)
    benchmark.extra_info.update({
        "entry": f"{model_id}--{variant}", "target": TARGET, "runtime": backend.runtime,
        "backend": runner.backend.to_dict(), "threads": backend.threads or "runtime default",
        "batch": int(prepared.shape[0]), "real_faces_per_query": n_real, "model_sha256": status.sha256,
        "single_stream": stats.to_dict(),
    })
    print(f"\n{model_id}--{variant}: p50 {stats.p50_ms:.3f} ms  p90 {stats.p90_ms:.3f} ms  ({stats.count} calls, "
          f"batch {prepared.shape[0]})")

    assert runner.backend.ok
    assert stats.count == calls
    assert 0.0 < stats.min_ms <= stats.p50_ms <= stats.max_ms < 10_000.0
