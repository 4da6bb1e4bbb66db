"""A tiny real job folder for the device tests: a y = 2x + offset ONNX model and a uint8 input array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.jobs import BackendRequest, FileRef, InputArray, Job, LatencySettings, OfflineSettings
from harness.models.fetch import sha256_file
from test_runners import times_two_model

MEAN, SCALE = (127.5, 127.5, 127.5), 1 / 127.5


def job_folder(folder: Path, *, n: int = 5, chunk_size: int = 2, min_duration_s: float = 0.05,
               max_duration_s: float = 5.0) -> tuple[Job, np.ndarray]:
    """(job, raw uint8 inputs) with model.onnx and inputs.npy written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    model = times_two_model(folder / "model.onnx", ["N", 4, 5, 3])
    raw = np.random.default_rng(0).integers(0, 256, (n, 4, 5, 3), dtype=np.uint8)
    np.save(folder / "inputs.npy", raw)
    job = Job(entry="tiny--onnx-fp32", task="gender", model=FileRef(model.name, sha256_file(model)), layout="NHWC",
              inputs=InputArray(FileRef("inputs.npy", sha256_file(folder / "inputs.npy")), MEAN, SCALE),
              backend=BackendRequest("onnxruntime", provider="CPUExecutionProvider", threads=1),
              samples=tuple((f"s{i}", i) for i in range(n)), pool_rows=tuple(range(n)),
              latency=LatencySettings(warmup=2, min_duration_s=min_duration_s, min_count=10,
                                      max_duration_s=max_duration_s),
              offline=OfflineSettings(batch=4, min_duration_s=0.02, min_count=2), chunk_size=chunk_size)
    job.write(folder)
    return job, raw
