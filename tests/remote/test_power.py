"""Issue 19, labgrid power and out of service, on the loopback lab (tests/remote/lab.py): each board's power switch
kills and restarts its real sshd (harness/launchers/sshd_power.py through labgrid's ExternalPowerDriver).

Cases: the board's sshd killed mid-entry (--pool, and --device): the run power-cycles it, waits for its shell, retries the entry once on
the same board and completes with every sample once, run.json recording the cycle; a board that does not answer
three runs in a row is marked out of service in the pool (held, with reason and time), refused by `--pool`, shown
by `bench pool` and brought back by `bench pool return`; `bench pool power PLACE on` switches a dead board on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.errors import EXIT_UNAVAILABLE, UnavailableError
from harness.launchers.pool import OUT_OF_SERVICE_HOLDER, Pool
from harness.paths import REPO_ROOT
from tests.remote.lab import power_cycled_run, wait_port
from tests.remote.test_remote_run import ENTRY, RUN, bench, records

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def power_lab(lab):
    lab.add("pw-a", tags={"target": "power"}, power=True)
    lab.add("pw-dead", tags={"target": "dead"}, power=True)
    return lab


@pytest.fixture(scope="module")
def coordinator(power_lab, labgrid):
    return labgrid.address


def pool_cli(coordinator: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "harness", "pool", *args, "--coordinator", coordinator], env=env,
                          capture_output=True, text=True, timeout=120)


def place(coordinator: str, name: str):
    return next(p for p in Pool(coordinator).places() if p.name == name)


def test_board_killed_mid_entry_is_power_cycled_and_the_entry_retried_on_it(power_lab, coordinator, built_packs,
                                                                           tiny_data, tmp_path):
    board = power_lab.boards["pw-a"]
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "8", "--pool", "target=power",
                 "--coordinator", coordinator, "--inventory", str(power_lab.inventory), wait=False)
    run_dir, doc, cycle = power_cycled_run(proc, tmp_path, board, ENTRY)
    assert cycle["switch"] == "inventory power commands"
    recs = records(run_dir)
    assert len(recs) == 24 and len({r["sample_id"] for r in recs}) == 24  # every sample, once
    p = place(coordinator, "pw-a")
    assert p.acquired is None and p.infra_failures == 0 and p.out_of_service is None  # the ok retry reset the count


def test_device_board_killed_mid_entry_is_power_cycled_too(power_lab, built_packs, tiny_data, tmp_path):
    # --device NAME from the inventory: the same switch, no labgrid needed
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "8", "--device", "pw-a",
                 "--inventory", str(power_lab.inventory), wait=False)
    run_dir, _, cycle = power_cycled_run(proc, tmp_path, power_lab.boards["pw-a"], ENTRY)
    assert cycle["switch"] == "inventory power commands"
    assert len(records(run_dir)) == 24


def test_three_infrastructure_failures_put_a_board_out_of_service(power_lab, coordinator, built_packs, tiny_data,
                                                                  tmp_path):
    board = power_lab.boards["pw-dead"]
    board.kill()  # it does not answer: each run's health check fails, an infrastructure failure of the place
    args = (*RUN, "--pool", "target=dead", "--pool-wait", "2", "--coordinator", coordinator, "--inventory",
            str(power_lab.inventory))
    try:
        for n in (1, 2, 3):
            proc = bench(tmp_path, built_packs, tiny_data, *args)
            assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
            assert f"{n} consecutive infrastructure failure" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
        p = place(coordinator, "pw-dead")
        assert p.acquired == OUT_OF_SERVICE_HOLDER and p.infra_failures == 3
        assert p.out_of_service.startswith("since ") and "3 consecutive infrastructure failures" in p.out_of_service
        assert "unreachable" in p.out_of_service
        # every host sees it: the mark lives in the coordinator; --pool refuses at once, naming it
        proc = bench(tmp_path, built_packs, tiny_data, *args)
        assert proc.returncode == EXIT_UNAVAILABLE
        last = proc.stderr.strip().splitlines()[-1]
        assert "every labgrid place matching target=dead is out of service" in last and "pw-dead" in last, last
        listing = pool_cli(coordinator)
        assert listing.returncode == 0 and "OUT: since" in listing.stdout, listing.stdout
        (row,) = [r for r in json.loads(pool_cli(coordinator, "--json").stdout) if r["name"] == "pw-dead"]
        assert row["out_of_service"] == p.out_of_service and row["infra_failures"] == 3
        # a person switches it on and brings it back
        on = pool_cli(coordinator, "power", "pw-dead", "on", "--inventory", str(power_lab.inventory))
        assert on.returncode == 0 and "pw-dead: power on done" in on.stdout, on.stderr
        wait_port(board.port)
        back = pool_cli(coordinator, "return", "pw-dead")
        assert back.returncode == 0 and "pw-dead is back in service (was out of service since" in back.stdout
        p = place(coordinator, "pw-dead")
        assert p.acquired is None and p.infra_failures == 0 and p.out_of_service is None and p.comment == ""
        pool = Pool(coordinator)
        pool.release(pool.acquire({"target": "dead"}, wait_s=10))  # a run can take it again
    finally:
        if board.sshd_pid() is None:
            board.start()


def test_pool_power_without_power_commands_is_a_usage_error(power_lab, coordinator, tmp_path):
    inv = tmp_path / "boards.toml"
    inv.write_text('[boards.pw-a]\naddress = "u@127.0.0.1:22"\n')
    out = pool_cli(coordinator, "power", "pw-a", "cycle", "--inventory", str(inv))
    assert out.returncode == 2 and "place 'pw-a' has no power commands" in out.stderr, out.stderr
    inv.write_text('[boards.pw-a]\naddress = "u@127.0.0.1:22"\npower = { cmd_on = "true" }\n')
    out = pool_cli(coordinator, "power", "pw-a", "cycle", "--inventory", str(inv))
    assert out.returncode == 2 and f"{inv}: [pw-a]: power: cmd_off must be a non-empty command" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_place_marked_out_of_service_by_another_host_is_held_not_used(power_lab, coordinator, labgrid):
    # Another run marked pw-dead (its comment) and released it; before its hold, our reservation got the place.
    labgrid.client("-p", "pw-a", "set-tags", "lab=loop")
    labgrid.client("-p", "pw-dead", "set-tags", "lab=loop")
    labgrid.client("-p", "pw-dead", "set-comment", "out of service since 2026-12-02T00:00:00Z: by another host")
    pool, said = Pool(coordinator), []
    try:
        lease = pool.acquire({"lab": "loop"}, wait_s=20, log=said.append)
        assert lease.place == "pw-a"
        with pytest.raises(UnavailableError, match="no free labgrid place matching lab=loop within"):
            pool.acquire({"lab": "loop"}, wait_s=3, log=said.append)  # pw-dead is allocated, put on hold, skipped
        assert place(coordinator, "pw-dead").acquired == OUT_OF_SERVICE_HOLDER
        assert any("labgrid place pw-dead is out of service (since 2026-12-02T00:00:00Z: by another host)" in m
                   for m in said), said
        pool.release(lease)
    finally:
        pool_cli(coordinator, "return", "pw-dead")
        labgrid.client("-p", "pw-a", "set-tags", "lab=")
        labgrid.client("-p", "pw-dead", "set-tags", "lab=")
    assert place(coordinator, "pw-dead").acquired is None and place(coordinator, "pw-a").acquired is None
