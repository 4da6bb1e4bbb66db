"""Issue 19, item 4, on the loopback lab (tests/remote/lab.py): a board's serial console captured into the run folder,
and its power switched through the labgrid exporter's NetworkPowerPort.

The exporter publishes, besides each board's NetworkService, a NetworkSerialPort (a raw TCP console server in the
test process printing boot lines, as ser2net would) and a NetworkPowerPort (labgrid's `simplerest` model, a small
HTTP PDU whose "off" kills the board's sshd and everything under it and drops its console, "on" starts it again).
Cases: a pool run writes `boards/<board>/console.log` with the console's lines and records it in run.json; a board
killed mid-entry is power-cycled through the exporter's power port (no inventory power table), its console reopened,
and its last console lines are in `power_cycles[]` and `infrastructure_failures[]`; a hostile console (escape
sequences, invalid UTF-8, closed by the server) read through the inventory's `console = "tcp://..."` does not break
the run and the log shows it escaped; `bench pool power PLACE off|on|cycle` switches through the exporter's port,
a NetworkPowerPort or a PDUDaemonPort (the same loopback switch answering as pdudaemon's HTTP listener).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.remote.lab import power_cycled_run, wait_port
from tests.remote.test_power import place, pool_cli
from tests.remote.test_remote_run import ENTRY, RUN, bench, records, run_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def console_lab(lab):
    lab.add("con-a", tags={"target": "console"}, console=True, pdu=True)
    lab.add("con-h", tags={"target": "hostile"}, console="hostile", console_in_inventory=True, pdu="pdudaemon")
    return lab


@pytest.fixture(scope="module")
def coordinator(console_lab, labgrid):
    return labgrid.address


PANIC = "[  420.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009"


def wait_for(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def console_record(doc: dict, board: str) -> dict:
    (rec,) = [c for c in doc["consoles"] if c["board"] == board]
    return rec


def test_a_pool_run_writes_the_boards_console_log(console_lab, coordinator, built_packs, tiny_data, tmp_path):
    board = console_lab.boards["con-a"]
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "0.2", "--pool", "target=console",
                 "--coordinator", coordinator, "--inventory", str(console_lab.inventory))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "console" not in proc.stderr, proc.stderr  # no warning
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    log = run_dir / "boards" / "con-a" / "console.log"
    text = log.read_text()
    assert "con-a login: " in text.splitlines(), text
    assert text.splitlines()[0] == f"[bench] console labgrid NetworkSerialPort raw://127.0.0.1:{board.console.port} opened"
    rec = console_record(run_json(run_dir), "con-a")
    assert rec["source"] == f"labgrid NetworkSerialPort raw://127.0.0.1:{board.console.port}"
    assert rec["log"] == "boards/con-a/console.log" and rec["bytes"] == log.stat().st_size > 0
    assert rec["connects"] == 1 and rec["error"] is None and rec["dropped_bytes"] == 0


def test_a_killed_board_is_power_cycled_through_the_exporters_power_port(console_lab, coordinator, built_packs,
                                                                         tiny_data, tmp_path):
    board = console_lab.boards["con-a"]
    console_lab.pdu.calls.clear()
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "8", "--pool", "target=console",
                 "--coordinator", coordinator, "--inventory", str(console_lab.inventory), wait=False)

    def last_words() -> None:
        board.console.say(PANIC)
        # the board's last words reached the run's log (written every 2 s) before it dies
        assert wait_for(lambda: PANIC in "".join(p.read_text() for p in tmp_path.glob("*/boards/con-a/console.log")))

    run_dir, doc, cycle = power_cycled_run(proc, tmp_path, board, ENTRY, before_kill=last_words)
    assert cycle["switch"] == f"labgrid NetworkPowerPort simplerest index {board.pdu_index}"
    panic = PANIC
    assert panic in cycle["console_tail"] and len(cycle["console_tail"]) <= 20, cycle
    (failure,) = doc["infrastructure_failures"]
    assert panic in failure["console_tail"]
    # labgrid's NetworkPowerDriver cycled the outlet: off, then on; a new sshd stands behind the board
    outlet = f"/outlet/{board.pdu_index}"
    assert console_lab.pdu.calls == [f"{outlet}/0", f"{outlet}/1"], console_lab.pdu.calls
    assert len(records(run_dir)) == 24
    # the console dropped with the power and was reopened: the boot after the cycle is in the same log
    text = (run_dir / "boards" / "con-a" / "console.log").read_text().splitlines()
    assert panic in text and "[  421.000000] reboot: Power down" in text
    assert any(line.startswith("[bench] console closed (") for line in text)
    assert text.index(panic) < len(text) - 1 - text[::-1].index("con-a login: ")  # logged in again after the panic
    rec = console_record(doc, "con-a")
    assert rec["connects"] >= 2 and rec["bytes"] == (run_dir / rec["log"]).stat().st_size


def test_a_hostile_console_is_escaped_and_does_not_break_the_run(console_lab, built_packs, tiny_data, tmp_path):
    # --device NAME with the inventory's console = "tcp://..." (no labgrid); the server closes the first connection
    board = console_lab.boards["con-h"]
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "0.2", "--device", "con-h",
                 "--inventory", str(console_lab.inventory))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "Traceback" not in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    raw = (run_dir / "boards" / "con-h" / "console.log").read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\xe2\x80\xae" not in raw  # no escape, no bidi override
    text = raw.decode("utf-8")  # valid UTF-8 throughout
    lines = text.splitlines()
    assert "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07screen cleared" in lines
    assert "bad bytes \\xff\\xfe\\xc3 end" in lines and "\\x1b[31mred alert\\x1b[0m \\u202e reversed" in lines
    assert "no newline at the close \\x1b[5m" in lines  # the unfinished line, ended when the console closed
    assert any(line.startswith("[bench] console closed (") for line in lines)
    assert "con-h login: " in lines  # reopened: the second connection's boot lines
    rec = console_record(run_json(run_dir), "con-h")
    assert rec["source"] == f"inventory raw://127.0.0.1:{board.console.port}" and rec["connects"] >= 2


def test_pool_power_switches_through_the_exporters_power_port(console_lab, coordinator):
    board = console_lab.boards["con-a"]
    try:
        off = pool_cli(coordinator, "power", "con-a", "off", "--inventory", str(console_lab.inventory))
        assert off.returncode == 0, off.stderr
        assert off.stdout.startswith("con-a: power off done in ") and "(labgrid NetworkPowerPort simplerest" in off.stdout
        assert board.sshd_pid() is None
        on = pool_cli(coordinator, "power", "con-a", "on", "--inventory", str(console_lab.inventory))
        assert on.returncode == 0 and "con-a: power on done" in on.stdout, on.stderr
        wait_port(board.port)
        assert place(coordinator, "con-a").exported["NetworkPowerPort"]["model"] == "simplerest"
        listing = json.loads(pool_cli(coordinator, "--json").stdout)
        (row,) = [r for r in listing if r["name"] == "con-a"]
        assert row["exported"]["NetworkSerialPort"]["port"] == board.console.port
    finally:
        if board.sshd_pid() is None:
            board.start()


def test_pool_power_switches_through_the_exporters_pdudaemon_port(console_lab, coordinator):
    from tests.remote.lab import PDU

    board = console_lab.boards["con-h"]
    outlet = f"hostname={PDU.PDUD_NAME}&port={board.pdu_index}"
    console_lab.pdu.calls.clear()
    try:
        published = place(coordinator, "con-h").exported["PDUDaemonPort"]
        assert (published["host"], published["pdu"], published["index"]) == \
            (console_lab.pdu.address, PDU.PDUD_NAME, board.pdu_index)
        off = pool_cli(coordinator, "power", "con-h", "off", "--inventory", str(console_lab.inventory))
        assert off.returncode == 0, off.stderr
        assert off.stdout.startswith("con-h: power off done in ")
        assert f"(labgrid PDUDaemonPort {PDU.PDUD_NAME} index {board.pdu_index})" in off.stdout
        assert board.sshd_pid() is None
        cycle = pool_cli(coordinator, "power", "con-h", "cycle", "--inventory", str(console_lab.inventory))
        assert cycle.returncode == 0 and "con-h: power cycle done" in cycle.stdout, cycle.stderr
        wait_port(board.port)
        # labgrid's PDUDaemonDriver: off, then reboot with its delay (2 s, rounded up as labgrid sends it)
        assert console_lab.pdu.calls == [f"/power/control/off?{outlet}", f"/power/control/reboot?{outlet}&delay=2"]
    finally:
        if board.sshd_pid() is None:
            board.start()
