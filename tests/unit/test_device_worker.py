"""The device worker: raw outputs in atomic chunks, measurements, only its --out folder written, transfer checks,
and the lean-import promise (no pandas/scipy/matplotlib/cv2/rich in a fresh worker process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_helpers import job_folder
from harness.device.worker import normalise, run_job
from harness.jobs import JobResult
from harness.paths import REPO_ROOT

HEAVY = ("pandas", "scipy", "matplotlib", "cv2", "rich")


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_worker_writes_raw_outputs_in_chunks_and_only_under_out(tmp_path):
    job, raw = job_folder(tmp_path / "in", n=5, chunk_size=2)
    before = tree(tmp_path / "in")
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    assert tree(tmp_path / "in") == before
    assert res.chunks == ("chunk-00000.npz", "chunk-00001.npz", "chunk-00002.npz")
    ids, outs = [], []
    for name in res.chunks:
        with np.load(tmp_path / "out" / "outputs" / name) as z:
            ids += list(z["sample_ids"])
            outs.append(z["out0"])
            assert (z["infer_ms"] > 0).all()
    assert ids == [f"s{i}" for i in range(5)]
    x = normalise(raw, (127.5,) * 3, 1 / 127.5)
    np.testing.assert_allclose(np.concatenate(outs), x * 2 + np.array([0.0, 10.0, 20.0], np.float32), rtol=1e-6)
    assert res.backend["active"][0] == "CPUExecutionProvider" and res.output_names == ("y",)
    timings = np.load(tmp_path / "out" / res.timings)
    assert len(timings) >= 10 and res.single_stream_batch == 1
    assert res.offline["throughput_ips"] > 0 and res.memory["rss_peak_mb"] > 0
    # the timed window's contention record: the loop's count, a CPU backend, each counter a number or "unavailable"
    assert res.contention["count"] == len(timings) and res.contention["cpu_executed"] is True
    assert set(res.contention) >= {"cpu_share", "involuntary_ctx_switches", "steal_pct", "loadavg_1m", "runnable"}
    assert res.environment["cpu"]["arch"] and JobResult.read(tmp_path / "out" / "result.json") == res


def test_normalise_matches_the_host_preprocessing():
    from harness.tasks.preprocess import normalize

    raw = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    mean, scale = (123.0, 117.0, 104.0), 1 / 58.0
    assert np.array_equal(normalise(raw, mean, scale), normalize(raw, mean, scale))


def test_a_corrupted_transfer_is_an_infrastructure_error(tmp_path):
    job, _ = job_folder(tmp_path / "in")
    with open(tmp_path / "in" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.status == "infrastructure-error"
    assert res.reason.startswith(f"{tmp_path / 'in' / 'model.onnx'}: sha256 mismatch")


def test_a_backend_that_is_not_here_is_a_test_error(tmp_path):
    from dataclasses import replace

    job, _ = job_folder(tmp_path / "in")
    job = replace(job, backend=replace(job.backend, provider="NoSuchExecutionProvider"))
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.status == "test-error" and "NoSuchExecutionProvider is not available" in res.reason


def worker_argv(how: str, job: Path, out: Path) -> list[str]:
    return ([sys.executable, "-m", "harness", "worker"] if how == "bench" else
            [sys.executable, "-m", "harness.device"]) + [str(job), "--out", str(out)]


@pytest.mark.parametrize("how", ["bench", "module"])
def test_fresh_worker_process_imports_no_workstation_library(tmp_path, how):
    job_folder(tmp_path / "in")
    probe = ("import runpy, sys, json; sys.argv = {argv!r}; code = 0\n"
             "try:\n    runpy.run_module({mod!r}, run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
             "print(json.dumps({{'code': code, 'heavy': [m for m in {heavy!r} if m in sys.modules]}}))")
    argv = worker_argv(how, tmp_path / "in" / "job.json", tmp_path / "out")
    mod = "harness" if how == "bench" else "harness.device"
    code = probe.format(argv=argv[2:] if how == "bench" else argv[2:], mod=mod, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, done.stderr[-2000:]
    assert JobResult.read(tmp_path / "out" / "result.json").ok


def test_unknown_job_schema_is_exit_2_one_line_and_no_result(tmp_path):
    job_folder(tmp_path / "in")
    doc = json.loads((tmp_path / "in" / "job.json").read_text())
    (tmp_path / "in" / "job.json").write_text(json.dumps(doc | {"schema_version": 7}))
    done = subprocess.run(worker_argv("bench", tmp_path / "in" / "job.json", tmp_path / "out"), capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"bench: error: {tmp_path / 'in' / 'job.json'}: schema version 7 is not supported by this harness (reads 1); "
        "use the same harness version on the host and the device"]
    assert not (tmp_path / "out" / "result.json").exists()
