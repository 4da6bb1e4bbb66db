"""Start-up costs of the lean entry points (issue 11): `bench --help`, and `bench worker` from process start to its
first inference.

Run: python -m pytest benchmarks/test_bench_device_startup.py -q -s

- `bench --help`: wall time of a fresh `python -m harness --help` process (interpreter start included), median of
  ROUNDS. Goal: under 0.5 s (it took 2.3-3 s when every command module imported its libraries at start).
- worker cold start: a fresh `python -m harness worker` process running a minimal job (gender-dlib, one real-sized
  input, no latency/offline loops worth the name): the process wall time from spawn to exit bounds "cold start to
  first inference" from above; init_ms and first_inference_ms from its result.json say how much of it is the model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.jobs import (BackendRequest, FileRef, InputArray, Job, JobResult, LatencySettings, OfflineSettings)
from harness.models.fetch import sha256_file
from harness.models.pack import variant_path

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 7
HELP_GOAL_S = 0.5
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV, cwd=REPO)
    return time.perf_counter() - t0


@pytest.mark.benchmark(group="startup")
def test_bench_help_under_half_a_second(benchmark):
    argv = [sys.executable, "-m", "harness", "--help"]
    _wall(argv)  # page cache warm, like any second invocation
    walls = np.array([_wall(argv) for _ in range(ROUNDS)])
    benchmark.extra_info.update({"median_s": round(float(np.median(walls)), 4), "walls_s": walls.round(4).tolist()})
    benchmark.pedantic(_wall, args=(argv,), rounds=3, iterations=1)
    print(f"\nbench --help: median {np.median(walls):.3f} s over {ROUNDS} runs {walls.round(3).tolist()}")
    assert np.median(walls) < HELP_GOAL_S


@pytest.mark.slow
@pytest.mark.benchmark(group="startup")
@pytest.mark.parametrize("variant, backend", [
    ("onnx-fp32", BackendRequest("onnxruntime", provider="CPUExecutionProvider", threads=1)),
    ("tflite-fp32", BackendRequest("litert", delegate="xnnpack", threads=1)),
], ids=["onnxruntime", "litert"])
def test_worker_cold_start_to_first_inference(benchmark, built_packs, tmp_path, variant, backend):
    model = variant_path(built_packs, "gender-dlib", variant)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / model.name).symlink_to(model)
    np.save(folder / "chips.npy", np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    Job(entry=f"gender-dlib--{variant}", task="gender", model=FileRef(model.name, sha256_file(model)), layout=None,
        inputs=InputArray(FileRef("chips.npy", sha256_file(folder / "chips.npy")), (127.5,) * 3, 1 / 127.5),
        backend=backend, samples=(("s0", 0),), pool_rows=(0,),
        latency=LatencySettings(warmup=0, min_duration_s=0.0, min_count=1, max_duration_s=1.0),
        offline=OfflineSettings(batch=1, min_duration_s=0.0, min_count=1)).write(folder)
    argv = [sys.executable, "-m", "harness", "worker", str(folder / "job.json"), "--out", str(tmp_path / "out")]
    _wall(argv)
    walls = np.array([_wall(argv) for _ in range(ROUNDS)])
    res = JobResult.read(tmp_path / "out" / "result.json")
    assert res.ok, res.reason
    benchmark.extra_info.update({"median_process_s": round(float(np.median(walls)), 4), "init_ms": res.init_ms,
                                 "first_inference_ms": res.first_inference_ms})
    benchmark.pedantic(_wall, args=(argv,), rounds=3, iterations=1)
    print(f"\nworker {variant}: process spawn->exit median {np.median(walls):.3f} s; model init {res.init_ms:.1f} ms, "
          f"first inference {res.first_inference_ms:.2f} ms")
