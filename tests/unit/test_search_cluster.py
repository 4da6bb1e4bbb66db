"""The blocked scorer on a real Dask cluster: a scheduler and two workers started as processes on loopback give
rows identical to the in-process scorer; a scheduler that does not answer is one line, exit 3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.errors import UnavailableError
from harness.metrics.search import SearchSettings, search

distributed = pytest.importorskip("distributed", reason="Dask distributed is the [cluster] extra")

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loopback_cluster():
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-c", "from distributed.cli.dask_scheduler import main; main()",
                               "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-c", "from distributed.cli.dask_worker import main; main()",
                                       address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                       "--host", "127.0.0.1"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    from harness.search_cluster import connect

    client = None
    try:
        deadline = time.monotonic() + 120
        while client is None:
            try:
                client = connect(address)
            except UnavailableError:
                if time.monotonic() > deadline:
                    raise
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        if client is not None:
            client.close()
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_cluster_rows_equal_in_process_rows(loopback_cluster):
    from harness.search_cluster import search_on_cluster

    rng = np.random.default_rng(5)
    P = rng.standard_normal((250, 64)).astype(np.float32)
    G = rng.standard_normal((700, 64)).astype(np.float32)
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    mates, groups = rng.integers(-1, 700, 250), rng.integers(0, 4, 250)
    settings = SearchSettings(k=10, thresholds=(0.1, 0.3), sizes=(100, 500, 700), probe_block=40, gallery_block=128)
    local = search(P, G, mates, groups, 4, settings)
    remote = search_on_cluster(P, G, mates, groups, 4, settings, client=loopback_cluster)
    assert remote.equals(local)
    assert len(loopback_cluster.scheduler_info()["workers"]) == 2


def test_a_scheduler_that_does_not_answer_is_exit_3():
    from harness.search_cluster import connect

    with pytest.raises(UnavailableError, match=r"does not answer") as info:
        connect(f"tcp://127.0.0.1:{free_port()}")
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


def test_bench_score_on_the_cluster_gives_the_in_process_rows(loopback_cluster, tmp_path):
    import contextlib
    import io
    import json

    from harness.cli import main
    from test_scoring_identification import fabricate

    def bench(argv):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return main(argv), err.getvalue()

    results = tmp_path / "results"
    run_dir, _ = fabricate(results)
    code, err = bench(["--results-dir", str(results), "score", run_dir.name])
    assert code == 0, err
    local = json.loads((run_dir / "run.json").read_text())
    address = loopback_cluster.scheduler.address
    code, err = bench(["--results-dir", str(results), "score", run_dir.name, "--scheduler", address])
    assert code == 0, err
    remote = json.loads((run_dir / "run.json").read_text())
    assert [e["metrics"] for e in remote["entries"]] == [e["metrics"] for e in local["entries"]]
    code, err = bench(["--results-dir", str(results), "score", run_dir.name, "--scheduler",
                       f"tcp://127.0.0.1:{free_port()}"])
    assert code == 3 and "does not answer" in err and len(err.strip().splitlines()) == 1


def test_templates_travel_as_float32_only_where_that_is_exact():
    from harness.metrics.search import quantize
    from harness.search_cluster import _wire

    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 64))
    q = quantize(x / np.linalg.norm(x, axis=1, keepdims=True))
    assert _wire(q).dtype == np.float32 and np.array_equal(_wire(q).astype(np.float64), q)
    wide = q.copy()
    wide[0, 0] = 1.0 + 2.0 ** -30  # needs more than float32's 24 bits
    assert _wire(wide).dtype == np.float64
