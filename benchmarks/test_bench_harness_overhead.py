"""Harness overhead on real models: what `bench run` measures vs a bare loop over the raw runtime.

Run: python -m pytest benchmarks/test_bench_harness_overhead.py -q   (benchmarks/ is not a default testpath)

Requirement: for the same model in the same process, the harness's steady-state single-stream cost divided by a
bare runtime loop's cost is at most 1.02.

Harness path (as the device worker, harness/device/worker.py, times single-stream in every job): make_runner(target backend) -> runner.prepare
once -> measure_loop(lambda: runner.infer(prepared)). Bare path: an onnxruntime.InferenceSession / LiteRT
Interpreter opened by this file with the same file, input array and thread count, called in a plain loop
(session.run with a feed dict built once; set_tensor + invoke + get_tensor), each call timed with
perf_counter_ns like any latency loop must.

Each round runs both loops for the same number of calls, back to back, order alternating (A/B, B/A) so neither
always gets the warmer cache; the figure is the median of the per-round ratios. Two ratios per round:
- cpu: thread CPU time (time.thread_time) of the harness loop / of the bare loop -- ASSERTED. On the shared
  2-core machine other processes preempt us for whole milliseconds, which thread time does not count.
- wall: median per-call wall latency of the harness loop / of the bare loop -- recorded, and only checked
  against a loose bound, because the per-round medians move by several percent with the load of other agents.
THREADS = 1 on both sides: with one intra-op thread every instruction of an inference runs on the calling
thread, so thread_time sees all of it; with more threads the workers' time is invisible to thread_time and
contention for 2 shared cores dominates the figure (mobilefacenet took 17 ms with 2 threads vs 8.4 ms with 1 here).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from harness import specs
from harness.models.pack import variant_path, variant_status
from harness.runners import Runner, make_runner
from harness.trackers.latency import measure_loop

MAX_RATIO = 1.02
MAX_WALL_RATIO = 1.10   # sanity bound only: wall medians on a shared box drift by more than the 2% under test
THREADS = 1
# Per-round ratios scatter by ~2% (sd) on the shared box, also bare-vs-bare; the median of 16 rounds keeps a false
# failure at 1.02 rare (sd of the median ~0.6%). Even: each order (harness first / bare first) runs ROUNDS / 2 times.
ROUNDS = 16
ROUND_SECONDS = 0.2     # per side per round; at least MIN_CALLS calls
MIN_CALLS = 30
WARMUP_CALLS = 10

CASES = [
    ("mobilefacenet", "onnx-fp32"),  # ~8 ms: overhead should vanish
    ("gender-dlib", "onnx-fp32"),    # ~0.2 ms: where per-call Python overhead matters most
    ("blazeface", "tflite-fp32"),    # LiteRT + XNNPACK path, ~0.6 ms
]


def _bare_onnxruntime(path: Path, x: np.ndarray) -> Callable[[int], np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    run = session.run

    def loop(n: int) -> np.ndarray:
        clock, out = time.perf_counter_ns, np.empty(n, dtype=np.int64)
        for i in range(n):
            t0 = clock()
            run(None, feed)
            out[i] = clock() - t0
        return out / 1e6

    return loop


def _bare_litert(path: Path, x: np.ndarray) -> Callable[[int], np.ndarray]:
    from ai_edge_litert import interpreter as litert

    interp = litert.Interpreter(model_path=str(path), num_threads=THREADS)
    interp.allocate_tensors()
    in_index = interp.get_input_details()[0]["index"]
    out_indices = [o["index"] for o in interp.get_output_details()]
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def loop(n: int) -> np.ndarray:
        clock, out = time.perf_counter_ns, np.empty(n, dtype=np.int64)
        for i in range(n):
            t0 = clock()
            set_tensor(in_index, x)
            invoke()
            [get_tensor(j) for j in out_indices]
            out[i] = clock() - t0
        return out / 1e6

    return loop


def _harness_loop(runner: Runner, prepared: np.ndarray) -> Callable[[int], np.ndarray]:
    # Exactly the single-stream call of harness/device/worker.py, with warm-up and duration handled by the rounds here.
    def loop(n: int) -> np.ndarray:
        return measure_loop(lambda: runner.infer(prepared), warmup=0, min_duration_s=0.0, min_count=n,
                            max_duration_s=3600.0)

    return loop


def _timed(loop: Callable[[int], np.ndarray], n: int) -> tuple[float, float]:
    """(thread CPU seconds, median per-call wall ms) of one loop of n calls."""
    t0 = time.thread_time()
    ms = loop(n)
    return time.thread_time() - t0, float(np.median(ms))


def paired_rounds(harness: Callable[[int], np.ndarray], bare: Callable[[int], np.ndarray], n: int,
                  rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-round (cpu ratios, wall ratios) of harness / bare, the two loops back to back in alternating order."""
    cpu, wall = [], []
    for r in range(rounds):
        if r % 2:
            (h_cpu, h_wall), (b_cpu, b_wall) = _timed(harness, n), _timed(bare, n)
        else:
            (b_cpu, b_wall), (h_cpu, h_wall) = _timed(bare, n), _timed(harness, n)
        cpu.append(h_cpu / b_cpu)
        wall.append(h_wall / b_wall)
    return np.asarray(cpu), np.asarray(wall)


@pytest.mark.slow
@pytest.mark.benchmark(group="harness-overhead")
@pytest.mark.parametrize(("model_id", "variant"), CASES, ids=[f"{m}--{v}" for m, v in CASES])
def test_harness_overhead_under_2pct(benchmark, built_packs: Path, model_input, model_id: str, variant: str):
    model = specs.get_model(model_id)
    status = variant_status(built_packs, model, variant)
    assert status.status == "built", f"{model_id}--{variant}: not built ({status.reason})"
    path = variant_path(built_packs, model_id, variant)
    backend = dataclasses.replace(specs.get_target("cpu").backend_for(variant), threads=THREADS)

    runner = make_runner(backend, path)
    prepared, _ = runner.prepare(model_input(model_id))
    bare_factory = _bare_onnxruntime if backend.runtime == "onnxruntime" else _bare_litert
    harness, bare = _harness_loop(runner, prepared), bare_factory(path, prepared)

    warm_ms = float(np.median(np.concatenate([harness(WARMUP_CALLS), bare(WARMUP_CALLS)])))
    n = max(MIN_CALLS, math.ceil(ROUND_SECONDS * 1e3 / warm_ms))
    cpu, wall = paired_rounds(harness, bare, n, ROUNDS)
    cpu_ratio, wall_ratio = float(np.median(cpu)), float(np.median(wall))

    benchmark.extra_info.update({
        "entry": f"{model_id}--{variant}", "runtime": backend.runtime, "backend_active": runner.backend.active,
        "threads": THREADS, "calls_per_round": n, "rounds": ROUNDS, "call_ms": round(warm_ms, 4),
        "ratio_cpu_median": round(cpu_ratio, 4), "ratios_cpu": cpu.round(4).tolist(),
        "ratio_wall_median": round(wall_ratio, 4), "ratios_wall": wall.round(4).tolist(),
    })
    # The benchmark's own statistic: the harness's timed call, so --benchmark-compare tracks it across commits.
    benchmark.pedantic(runner.infer, args=(prepared,), rounds=n, iterations=1, warmup_rounds=WARMUP_CALLS)
    print(f"\n{model_id}--{variant} ({warm_ms:.3f} ms/call, {n} calls x {ROUNDS} rounds): "
          f"harness/bare cpu {cpu_ratio:.4f} {cpu.round(4).tolist()}, wall {wall_ratio:.4f} {wall.round(4).tolist()}")

    assert cpu_ratio <= MAX_RATIO, (f"{model_id}--{variant}: harness/bare CPU-time ratio {cpu_ratio:.4f} > "
                                    f"{MAX_RATIO} (rounds: {cpu.round(4).tolist()})")
    assert wall_ratio <= MAX_WALL_RATIO, (f"{model_id}--{variant}: harness/bare wall median ratio {wall_ratio:.4f} > "
                                          f"{MAX_WALL_RATIO} (rounds: {wall.round(4).tolist()})")
