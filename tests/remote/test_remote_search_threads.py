"""`--threads` reaches the BLAS of a search job on an SSH board (issue 18): the worker's command line on a loopback
sshd board (tests/remote/lab.py, a lean device install: numpy, psutil, harness) carries the BLAS thread variables,
and the board's own BLAS reports the count it then uses."""

from __future__ import annotations

import numpy as np
import pytest

from harness.jobs import LatencySettings
from harness.launchers.remote import make_board
from harness.launchers.ssh import SSHLauncher
from harness.launchers.trust import read_search
from harness.search_job import build, compare

FAST = LatencySettings(warmup=2, min_duration_s=0.0, min_count=15)


@pytest.fixture(scope="module")
def board(lab):
    b = lab.add("board-search", runtimes=())
    return make_board(b.name, f"{b.user}@127.0.0.1:{b.port}",
                      {"identity_file": str(lab.client_key), "known_hosts": str(lab.known_hosts),
                       "python": str(b.python), "workdir": str(b.workdir), "connect_timeout_s": 5,
                       "keepalive_s": 2}, "test")


@pytest.mark.parametrize("threads", [1, 0])
def test_a_search_job_on_an_ssh_board_runs_with_the_blas_threads_asked_for(board, tmp_path, threads):
    rng = np.random.default_rng(5)
    gallery, probes = rng.standard_normal((50, 16)), rng.standard_normal((5, 16))
    full = gallery
    job = build("e--search--d", gallery, probes, [f"p{i}" for i in range(5)], tmp_path / "in", latency=FAST,
                seed=5, k=5, sizes=(500,), threads=threads)
    launcher = SSHLauncher(board, timeout_s=120, poll_s=0.5)
    res = launcher.launch(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    ret = read_search(tmp_path / "out", job, res, n_gallery=len(full), dim=16, where=launcher.where)
    assert compare(full, probes, ret.top_index, ret.top_score, ret.sample_ids, where=launcher.where)["agree"] == 5
    if threads:
        assert ret.blas_threads["requested"] == 1 and ret.blas_threads["used"] in (1, "as requested")
    else:
        assert ret.blas_threads["requested"] == "runtime default"
