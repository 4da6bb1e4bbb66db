"""A pool of boards through labgrid (coordinator + exporter on loopback, tests/remote/lab.py).

Cases: two jobs asking for one board never share it (the second waits in labgrid's reservation queue, or gives up
with exit 3 after --pool-wait); a holder killed with kill -9 is released by `bench pool release --stale`;
`bench run --pool target=cpu` end to end with the board killed mid-entry: the entry is retried once on the other
matching board and the run completes; every place is released afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.errors import UnavailableError
from harness.launchers.pool import Pool, holder_alive
from harness.paths import REPO_ROOT
from tests.remote.test_remote_run import ENTRY, RUN, bench, records, run_json
from tests.remote.lab import wait_for_first_chunk

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def pool_lab(lab):
    lab.add("rpi-a", tags={"target": "cpu"})
    lab.add("rpi-b", tags={"target": "cpu"})
    lab.add("solo", tags={"target": "solo"})
    return lab


@pytest.fixture(scope="module")
def coordinator(pool_lab, labgrid):
    return labgrid.address


def held(address: str) -> dict[str, str | None]:
    return {p.name: p.acquired for p in Pool(address).places()}


def test_bench_pool_shows_the_board_behind_each_free_place(pool_lab, coordinator):
    places = {p.name: p for p in Pool(coordinator).places()}
    for name, board in pool_lab.boards.items():
        assert places[name].acquired is None
        assert places[name].network_service == {"address": "127.0.0.1", "username": board.user, "port": board.port}
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), COLUMNS="200")
    out = subprocess.run([sys.executable, "-m", "harness", "pool", "--coordinator", coordinator], env=env,
                         capture_output=True, text=True, timeout=60).stdout
    for board in pool_lab.boards.values():
        assert f"{board.user}@127.0.0.1:{board.port}" in out, out


def test_two_jobs_for_one_board_never_share_it(coordinator):
    spans: list[tuple[str, float, float]] = []

    def job(name: str, hold_s: float) -> None:
        pool = Pool(coordinator)
        lease = pool.acquire({"target": "solo"}, wait_s=60)
        t0 = time.monotonic()
        assert lease.place == "solo" and lease.network_service["address"] == "127.0.0.1"
        time.sleep(hold_s)
        t1 = time.monotonic()
        pool.release(lease)
        spans.append((name, t0, t1))

    first = threading.Thread(target=job, args=("first", 3.0))
    first.start()
    time.sleep(1.0)
    # A third job that will not wait long enough is refused (exit 3's error), never given the held board.
    with pytest.raises(UnavailableError, match="no free labgrid place matching target=solo within"):
        Pool(coordinator).acquire({"target": "solo"}, wait_s=1.0)
    second = threading.Thread(target=job, args=("second", 0.5))
    second.start()
    first.join(30)
    second.join(30)
    (_, a0, a1), (_, b0, b1) = sorted(spans, key=lambda s: s[1])
    assert [s[0] for s in sorted(spans, key=lambda s: s[1])] == ["first", "second"]
    assert b0 >= a1  # the second held the board only after the first released it
    # Released and the reservation cancelled: nobody holds it and the next job gets it at once.
    assert held(coordinator)["solo"] is None
    t = time.monotonic()
    pool = Pool(coordinator)
    pool.release(pool.acquire({"target": "solo"}, wait_s=5))
    assert time.monotonic() - t < 5


def test_holder_killed_with_kill_9_is_released_as_stale(coordinator, tmp_path):
    code = ("import sys, time; from harness.launchers.pool import Pool; "
            f"lease = Pool({coordinator!r}).acquire({{'target': 'solo'}}, wait_s=30); "
            "print(lease.place, flush=True); time.sleep(600)")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "solo"
        name = held(coordinator)["solo"]
        assert name and f"+bench-{holder.pid}-" in name and holder_alive(name) is True
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
    assert held(coordinator)["solo"] == name  # labgrid has no lease: the dead process still holds it
    listing = subprocess.run([sys.executable, "-m", "harness", "pool", "--coordinator", coordinator, "--json"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    solo = next(p for p in json.loads(listing.stdout) if p["name"] == "solo")
    assert solo["acquired"] == name and solo["holder_alive"] is False
    out = subprocess.run([sys.executable, "-m", "harness", "pool", "release", "--stale", "--coordinator",
                          coordinator], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "released solo" in out.stdout, out.stderr
    assert held(coordinator)["solo"] is None


def test_pool_run_board_killed_mid_entry_is_retried_on_the_other_board(pool_lab, coordinator, built_packs,
                                                                        tiny_data, tmp_path):
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "8", "--pool", "target=cpu",
                 "--coordinator", coordinator, "--inventory", str(pool_lab.inventory), wait=False)
    killed = None
    try:
        if wait_for_first_chunk(proc, tmp_path, ENTRY):
            holder = {k: v for k, v in held(coordinator).items() if v}
            (killed,) = holder  # exactly one place is held: the board the entry runs on
            pool_lab.boards[killed].kill()
        assert killed is not None, proc.communicate()[1]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        for b in pool_lab.boards.values():
            if b.proc is None:
                b.start()
    assert proc.returncode == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    doc = run_json(run_dir)
    (entry,) = doc["entries"]
    other = ({"rpi-a", "rpi-b"} - {killed}).pop()
    assert doc["status"] == "complete" and entry["status"] == "ok" and entry["device"] == other
    assert doc["launcher"]["earlier"][0]["board"]["name"] == killed  # the failover is on record
    assert len(records(run_dir)) == 24
    assert all(v is None for v in held(coordinator).values())  # every place released
