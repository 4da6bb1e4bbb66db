"""Issue 10: kill -9 of `bench run` (the parent alone, not its process group) leaves no worker behind within 1 s,
and nothing is written into the run folder after the parent is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _gone_within(proc: psutil.Process, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:  # dead, waiting for its adopter to reap it
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def _cmdline(proc: psutil.Process) -> list[str]:
    """A child's command line, or [] for one that exited (or became a zombie) between listing and reading: bench run
    also starts short-lived children (git, the probes' tools) while the test looks for its worker."""
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def test_kill_9_of_bench_run_leaves_no_worker(built_packs, data_root, tmp_path):
    results = tmp_path / "res"
    argv = [sys.executable, "-m", "harness", "run", "--target", "cpu", "--model", "gender-dlib", "--variant",
            "onnx-fp32", "--threads", "1", "--min-duration", "60", "--min-count", "20", "--results-dir", str(results),
            "--cache-dir", str(built_packs), "--data-root", str(data_root), "--no-build"]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    try:
        parent, worker, deadline = psutil.Process(proc.pid), None, time.monotonic() + 180
        while worker is None and time.monotonic() < deadline and proc.poll() is None:
            worker = next((p for p in parent.children() if "worker" in _cmdline(p)), None)
            time.sleep(0.05)
        assert worker is not None, "bench run started no worker"
        time.sleep(1.0)  # into the job (load, accuracy pass, the 60 s latency loop)
        os.kill(proc.pid, signal.SIGKILL)
        assert _gone_within(worker, 1.0), f"worker {worker.pid} outlived bench run by more than 1 s"
        snapshot = sorted((str(p), p.stat().st_size) for p in results.rglob("*") if p.is_file())
        time.sleep(0.5)
        assert sorted((str(p), p.stat().st_size) for p in results.rglob("*") if p.is_file()) == snapshot
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
