"""`--threads` bounds the BLAS threads of the on-board search (issue 18): the worker's environment in every launcher
(local, emulated, SSH), the count the board's BLAS reports (harness/device/blas.py), and the host's check of it."""

from __future__ import annotations

import dataclasses
import json
import shlex

import numpy as np
import pytest

from harness.errors import InfrastructureError
from harness.jobs import BLAS_THREAD_VARIABLES, BackendRequest, LatencySettings, blas_environment
from harness.launchers.local import LocalLauncher
from harness.launchers.trust import read_search
from harness.search_job import build

FAST = LatencySettings(warmup=2, min_duration_s=0.0, min_count=15)


def _search_job(tmp_path, threads):
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((40, 16))
    return build("e--search--d", gallery, rng.standard_normal((6, 16)), [f"p{i}" for i in range(6)], tmp_path / "in",
                 latency=FAST, seed=3, k=5, sizes=(400,), threads=threads), gallery


def test_only_a_search_job_with_a_thread_count_sets_the_blas_variables(tmp_path):
    job, _ = _search_job(tmp_path, 2)
    assert blas_environment(job) == {name: "2" for name in BLAS_THREAD_VARIABLES}
    assert blas_environment(_search_job(tmp_path, 0)[0]) == {}
    inference = dataclasses.replace(job, task="verification", search=None)
    assert blas_environment(inference) == {}


@pytest.mark.parametrize("threads", [1, 0])
def test_the_local_worker_runs_the_search_with_its_blas_bounded_and_says_so(tmp_path, threads):
    job, full = _search_job(tmp_path, threads)
    res = LocalLauncher(timeout_s=120).launch(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    ret = read_search(tmp_path / "out", job, res, n_gallery=len(full), dim=16, where="local worker")
    blas = ret.blas_threads
    if threads:
        assert blas["requested"] == 1
        # read from the BLAS itself where it answers (numpy's wheels: OpenBLAS); never a count other than asked
        assert blas["used"] in (1, "as requested"), blas
        assert res.contention["threads"] == 1 and res.contention["threads_requested"] == 1
    else:
        assert blas["requested"] == "runtime default"
        assert blas["used"] == "unknown" or (isinstance(blas["used"], int) and blas["used"] >= 1)


def test_the_emulated_board_and_the_ssh_board_get_the_variables_on_the_worker_line(tmp_path):
    from harness.launchers.ssh import Board, SSHLauncher

    job, _ = _search_job(tmp_path, 3)
    cmd = SSHLauncher(Board(name="pi-1", host="10.0.0.9")).worker_command(job, "jobs/x")
    worker = cmd.rsplit("{ ", 1)[1]  # the last group: the worker (the first checks cas/)
    words = shlex.split(worker.split(";")[0])
    assert words[:3] == [f"{v}=3" for v in BLAS_THREAD_VARIABLES] and words[3:6] == ["python3", "-m", "harness"]
    plain, _ = _search_job(tmp_path / "p", 0)
    assert "NUM_THREADS" not in SSHLauncher(Board(name="pi-1", host="h")).worker_command(plain, "jobs/x")

    from harness.launchers.arm64_board import Arm64Board

    board = Arm64Board(tmp_path / "cache")
    line = board.command(["python3", "-m", "harness.device"], env=blas_environment(job))[-1].splitlines()[-1]
    words = shlex.split(line)
    assert all(f"{v}=3" in words for v in BLAS_THREAD_VARIABLES)
    assert words.index("OMP_NUM_THREADS=3") < words.index("python3")


@pytest.mark.parametrize("claim, fragment", [
    ("lots", "says 'lots' threads used"),
    (0, "says '0' threads used"),
    (10**9, "threads used, not a count"),
])
def test_a_board_that_claims_an_impossible_thread_count_is_refused(tmp_path, claim, fragment):
    job, full = _search_job(tmp_path, 1)
    res = LocalLauncher(timeout_s=120).launch(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    search = dict(res.search) | {"blas_threads": {"requested": 1, "used": claim, "source": "x"}}
    with pytest.raises(InfrastructureError, match=f"field 'search' 'blas_threads'.*{fragment}"):
        read_search(tmp_path / "out", job, res.replace(search=search), n_gallery=len(full), dim=16, where="b")
    search["blas_threads"] = {"requested": 8, "used": 8, "source": "x"}
    with pytest.raises(InfrastructureError, match="says 8 threads requested, the job asked for 1"):
        read_search(tmp_path / "out", job, res.replace(search=search), n_gallery=len(full), dim=16, where="b")
    json.dumps(read_search(tmp_path / "out", job, res, n_gallery=len(full), dim=16, where="b").blas_threads)
