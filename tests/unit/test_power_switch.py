"""A board's power switch (harness/launchers/power.py): the inventory's `power` table and labgrid's
ExternalPowerDriver running real commands (no board needed: the commands write marker files)."""

from __future__ import annotations

import shlex
import sys

import pytest

from harness.errors import InputError, UnavailableError
from harness.launchers.power import PowerSpec, switch, wait_for_shell
from harness.launchers.remote import load_inventory, power_for

pytest.importorskip("labgrid")


def test_power_table_is_checked_with_one_line_naming_the_file(tmp_path):
    inv = tmp_path / "boards.toml"
    inv.write_text('[defaults]\npower = { cmd_on = "true", cmd_off = "true" }\n')
    with pytest.raises(InputError, match=r"boards.toml: \[defaults\]: power belongs to one board"):
        load_inventory(inv)
    for table, why in (('{ cmd_on = "true" }', "cmd_off must be a non-empty command"),
                       ('{ cmd_on = "true", cmd_off = "true", volts = 5 }', "unknown key"),
                       ('{ cmd_on = "true", cmd_off = "true", boot_timeout_s = 0 }', "boot_timeout_s must be"),
                       ('"pdu on"', "power must be a table")):
        inv.write_text(f'[boards.a]\naddress = "u@h:22"\npower = {table}\n')
        with pytest.raises(InputError, match=why):
            load_inventory(inv)
    inv.write_text('[boards.a]\naddress = "u@h:22"\npower = { cmd_on = "on", cmd_off = "off", delay_s = 1 }\n'
                   '[boards.b]\naddress = "u@h:23"\n')
    doc = load_inventory(inv)
    assert power_for("a", doc, inv) == PowerSpec("on", "off", None, 1.0, 120.0)
    assert power_for("b", doc, inv) is None and power_for("nope", doc, inv) is None


def test_switch_runs_the_commands_through_labgrid(tmp_path):
    log = tmp_path / "log"
    cmd = f"{shlex.quote(sys.executable)} -c \"import sys; open({str(log)!r}, 'a').write(sys.argv[1] + ' ')\""
    spec = PowerSpec(cmd_on=f"{cmd} on", cmd_off=f"{cmd} off", delay_s=0.1)
    switch(spec, "a", "cycle")  # no cmd_cycle: off, delay, on (labgrid's PowerResetMixin order)
    switch(spec, "a", "off")
    assert log.read_text().split() == ["off", "on", "off"]
    spec = PowerSpec(cmd_on="true", cmd_off="true", cmd_cycle=f"{cmd} cycle")
    switch(spec, "a", "cycle")
    assert log.read_text().split()[-1] == "cycle"
    with pytest.raises(UnavailableError, match=r"board a: power on failed: sh -c 'echo dead; exit 4' exited 4: dead"):
        switch(PowerSpec(cmd_on="sh -c 'echo dead; exit 4'", cmd_off="true"), "a", "on")


def test_wait_for_shell_is_bounded():
    calls = []

    def never():
        calls.append(1)
        raise UnavailableError("board a: unreachable: Connection refused")

    got, waited, last = wait_for_shell(never, 0.35, poll_s=0.1)
    assert got is None and waited < 1.0 and "Connection refused" in last and 2 <= len(calls) <= 5
    tries = iter([UnavailableError("not yet"), "launcher"])

    def second():
        value = next(tries)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_for_shell(second, 5, poll_s=0.05)[0] == "launcher"


def test_a_hung_power_command_is_killed_after_command_timeout_s():
    import time

    t0 = time.monotonic()
    with pytest.raises(UnavailableError, match=r"board a: power cycle did not finish within 1 s \(command_timeout_s\)"):
        switch(PowerSpec(cmd_on="true", cmd_off="true", cmd_cycle="sleep 30", command_timeout_s=1), "a", "cycle")
    assert time.monotonic() - t0 < 12


def test_two_boards_switched_at_once_do_not_trip_labgrids_step_stack(tmp_path):
    # A fan-out run power-cycling two boards: two threads in labgrid drivers at once. labgrid keeps one global step
    # stack and asserts on the way out that the top is its own step; the first switch ends while the second's step
    # is on top. Without power.py's lock the first raised AssertionError here.
    import threading
    import time

    from labgrid.step import steps

    errors, took = [], {}

    def cycle(board: str, seconds: float):
        spec = PowerSpec(cmd_on="true", cmd_off=f"sleep {seconds}", delay_s=0.01)
        try:
            took[board] = switch(spec, board, "off")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"{board}: {type(exc).__name__}: {exc}")

    first = threading.Thread(target=cycle, args=("a", 0.2))
    second = threading.Thread(target=cycle, args=("b", 0.8))
    first.start()
    time.sleep(0.05)
    second.start()
    first.join(30)
    second.join(30)
    assert errors == [] and set(took) == {"a", "b"}
    assert steps.get_current() is None  # every step popped
