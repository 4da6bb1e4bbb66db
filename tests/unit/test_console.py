"""A board's console log (harness/launchers/console.py) and power from the exporter (harness/launchers/netpower.py):
the capped log and its sanitising, the strict `console = "tcp://HOST:PORT"`, what an exporter may publish, and the
real labgrid SerialDriver / NetworkPowerDriver against small loopback servers (issue 19, item 4)."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from harness.errors import InputError, UnavailableError
from harness.launchers.console import (ConsoleCapture, ConsoleLog, ConsoleSource, exported_console, log_name,
                                       parse_inventory_console, visible)
from harness.launchers.netpower import NetworkPowerSpec, exported_power


# -- sanitising -----------------------------------------------------------------------------------------------------
def test_escape_sequences_and_invalid_utf8_are_made_visible():
    log = ConsoleLog()
    log.feed(b"\x1b[2J\x1b]0;owned\x07clear\r\nok \xff\xfe end\n\xc2\x9b31m C1 CSI\n")
    assert log.lines == deque_of(["\\x1b[2J\\x1b]0;owned\\x07clear", "ok \\xff\\xfe end", "\\x9b31m C1 CSI"])
    assert "\x1b" not in log.text() and "\x9b" not in log.text() and "\x07" not in log.text()


def deque_of(items):
    from collections import deque

    return deque(items)


def test_a_utf8_character_split_across_reads_is_joined_and_tabs_are_kept():
    log = ConsoleLog()
    text = "Grüße\tdone\n".encode()
    for i in range(len(text)):
        log.feed(text[i:i + 1])
    assert list(log.lines) == ["Grüße\tdone"]
    assert visible("a\rb\x7f") == "a\\rb\\x7f"


def test_the_cap_keeps_the_last_lines_and_says_what_was_dropped():
    log = ConsoleLog(cap=90)
    for i in range(50):
        log.feed(f"line {i:03d}\n".encode())  # 8 bytes + newline each
    assert log.size == 90 and list(log.lines)[-1] == "line 049" and len(log.lines) == 10
    assert log.dropped_lines == 40 and log.dropped_bytes == 360 and log.received_bytes == 450
    first, *rest = log.text().splitlines()
    assert first == "[bench] 360 bytes (40 lines) of earlier console output dropped: the log keeps the last 90 bytes"
    assert rest == [f"line {i:03d}" for i in range(40, 50)]


def test_long_lines_are_split_and_an_unfinished_line_is_in_the_tail():
    log = ConsoleLog(max_line=10)
    log.feed(b"x" * 25 + b"\nnot ended")
    assert list(log.lines) == ["x" * 10, "x" * 10, "x" * 5]
    assert log.tail(2) == ["x" * 5, "not ended"] and log.text().endswith("not ended\n")
    log.note("console closed")
    assert list(log.lines)[-2:] == ["not ended", "[bench] console closed"]


def test_a_board_name_that_is_not_a_safe_file_name_gets_a_stand_in():
    assert log_name("rpi5-a") == "rpi5-a"
    for bad in ("../etc", "a/b", ".hidden", "x\x1b[2J"):
        name = log_name(bad)
        assert name.startswith("board-") and "/" not in name and name == log_name(bad)


# -- where a console comes from ---------------------------------------------------------------------------------------
def test_inventory_console_is_parsed_strictly():
    assert parse_inventory_console("tcp://10.0.0.5:7001", "f") == ConsoleSource("10.0.0.5", 7001, "raw", 115200,
                                                                                 "inventory")
    assert parse_inventory_console("tcp://ser2net.lab:2001", "f").host == "ser2net.lab"
    for bad in ("10.0.0.5:7001", "telnet://h:1", "tcp://h", "tcp://h:0", "tcp://h:70000", "tcp://u@h:1",
                "tcp://h:1/x", "tcp://h:1?a=b", "tcp://h_x:1", "tcp://h:1\n", 7001, "tcp://:1"):
        with pytest.raises(InputError, match=r"^boards.toml: \[boards.a\]: console"):
            parse_inventory_console(bad, "boards.toml: [boards.a]")


def test_inventory_console_key_is_validated_when_the_inventory_is_loaded(tmp_path):
    from harness.launchers.remote import console_for, load_inventory

    inv = tmp_path / "boards.toml"
    inv.write_text('[boards.a]\naddress = "u@h"\nconsole = "tcp://127.0.0.1:7001"\n')
    assert console_for("a", load_inventory(inv), inv).port == 7001
    inv.write_text('[boards.a]\naddress = "u@h"\nconsole = "tcp://127.0.0.1:7001/../x"\n')
    with pytest.raises(InputError, match=r"boards.toml: \[a\]: console "):
        load_inventory(inv)
    inv.write_text('[defaults]\nconsole = "tcp://127.0.0.1:7001"\n')
    with pytest.raises(InputError, match=r"\[defaults\]: console belongs to one board"):
        load_inventory(inv)


def test_what_an_exporter_publishes_is_checked():
    src, problem = exported_console({"host": "127.0.0.1", "port": 4001, "speed": 115200, "protocol": "rfc2217"})
    assert problem is None and src.describe() == "labgrid NetworkSerialPort rfc2217://127.0.0.1:4001"
    for params, why in (({"host": "h", "port": 1, "protocol": "ssh"}, "protocol"),
                        ({"host": "h;rm", "port": 1}, "host"), ({"host": "h", "port": "1"}, "port"),
                        ({"host": "h", "port": 1, "speed": -1}, "speed"), (None, "without parameters")):
        src, problem = exported_console(params)
        assert src is None and why in problem
    spec, problem = exported_power({"model": "simplerest", "host": "http://pdu/{index}/{value}", "index": "3"})
    assert problem is None and spec.index == "3" and spec.source == "labgrid NetworkPowerPort simplerest index 3"
    for params, why in (({"model": "../os", "host": "h", "index": 0}, "not a labgrid power backend name"),
                        ({"model": "nosuchpdu", "host": "h", "index": 0}, "not one of labgrid's power backends"),
                        ({"model": "simplerest", "host": "h\x1b", "index": 0}, "host"),
                        ({"model": "simplerest", "host": "h", "index": "x"}, "index")):
        spec, problem = exported_power(params)
        assert spec is None and why in problem and "\x1b" not in problem


# -- the real labgrid drivers against loopback servers ----------------------------------------------------------------
class LineServer:
    """A TCP console: each connection gets the chunks of `script(n)`, then it is closed (or kept open)."""

    def __init__(self, script, keep_open=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.script, self.keep_open, self.n, self.conns = script, keep_open, 0, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.n += 1
            for chunk in self.script(self.n):  # a line at a time, as a console prints (pyserial drops what
                time.sleep(0.05)               # arrived before its open() returned: reset_input_buffer)
                try:
                    conn.sendall(chunk)
                except OSError:
                    break
            if self.keep_open:
                self.conns.append(conn)
            else:
                conn.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def wait_until(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_capture_reopens_a_console_that_closes_and_writes_the_log(tmp_path):
    pytest.importorskip("labgrid")
    server = LineServer(lambda n: [f"[    0.00000{n}] boot {n} line {i}\r\n".encode() for i in range(8)]
                        + [b"\x1b[31mred\x1b[0m\n"])
    said = []
    cap = ConsoleCapture("rpi-a", ConsoleSource("127.0.0.1", server.port), log=said.append, retry_s=0.05)
    try:
        cap.start()
        cap.attach(tmp_path / "boards" / "rpi-a", "boards/rpi-a/console.log")
        assert wait_until(lambda: cap.connects >= 3)
    finally:
        record = cap.stop()
        server.close()
    text = (tmp_path / "boards" / "rpi-a" / "console.log").read_text()
    assert "[    0.000001] boot 1 line 7" in text and "[    0.000002] boot 2 line 7" in text
    assert "\\x1b[31mred\\x1b[0m" in text and "\x1b" not in text
    assert "[bench] console closed (" in text and "opened (connection 2)" in text
    assert record["log"] == "boards/rpi-a/console.log" and record["bytes"] == len(text.encode())
    assert record["source"] == "inventory raw://127.0.0.1:" + str(server.port) and record["connects"] >= 3
    assert said == []  # it opened: no warning


def test_a_console_that_cannot_be_opened_is_one_warning_and_a_note(tmp_path):
    pytest.importorskip("labgrid")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    said = []
    cap = ConsoleCapture("rpi-b", ConsoleSource("127.0.0.1", port), log=said.append, retry_s=0.05)
    cap.start()
    cap.attach(tmp_path / "b", "boards/rpi-b/console.log")
    time.sleep(0.3)
    record = cap.stop()
    assert len(said) == 1 and said[0].startswith(f"board rpi-b: console inventory raw://127.0.0.1:{port} cannot be "
                                                 "opened (") and "\n" not in said[0]
    assert record["connects"] == 0 and record["error"].startswith("cannot open: ")


class PDU(http.server.BaseHTTPRequestHandler):
    """labgrid's simplerest model: GET /outlet/<index>/<0|1> switches, GET /outlet/<index> reads."""

    calls: list[str] = []
    fail = False

    def do_GET(self):
        type(self).calls.append(self.path)
        if type(self).fail:
            self.send_error(500, "relay stuck")
            return
        body = b"1" if self.path.count("/") == 2 else b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_network_power_port_is_switched_through_labgrids_driver():
    pytest.importorskip("labgrid")
    from harness.launchers.power import switch

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PDU)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    spec = NetworkPowerSpec(model="simplerest", host=f"http://127.0.0.1:{httpd.server_port}/outlet/{{index}}/{{value}}",
                            index="2", delay_s=0.01)
    try:
        PDU.calls.clear()
        switch(spec, "rpi-a", "off")
        switch(spec, "rpi-a", "cycle")
        assert PDU.calls == ["/outlet/2/0", "/outlet/2/0", "/outlet/2/1"]
        PDU.fail = True
        with pytest.raises(UnavailableError) as exc:
            switch(spec, "rpi-a", "on")
        msg = exc.value.message
        assert msg.startswith("board rpi-a: power on failed (labgrid NetworkPowerPort simplerest index 2): ")
        assert "500" in msg and "\n" not in msg
    finally:
        PDU.fail = False
        httpd.shutdown()


def test_the_inventory_wins_over_what_the_exporter_publishes(tmp_path):
    from types import SimpleNamespace

    from harness.launchers.exported import Exported
    from harness.launchers.remote import load_inventory, power_for

    inv = tmp_path / "boards.toml"
    inv.write_text('[boards.own]\nconsole = "tcp://10.0.0.9:7001"\npower = { cmd_on = "on", cmd_off = "off" }\n')
    inventory = load_inventory(inv)
    published = {"NetworkSerialPort": {"host": "10.0.0.2", "port": 4001, "speed": 115200, "protocol": "rfc2217"},
                 "NetworkPowerPort": {"model": "simplerest", "host": "http://pdu/{index}/{value}", "index": 1}}
    held = {name: SimpleNamespace(exported=published) for name in ("own", "plain")}
    held["bad"] = SimpleNamespace(exported={"NetworkPowerPort": {"model": "../../os", "host": "h", "index": 0}})
    said = []
    exported = Exported(inventory, inv, held, said.append)
    assert exported.console("own") == (parse_inventory_console("tcp://10.0.0.9:7001", "x"), None)
    src, problem = exported.console("plain")
    assert problem is None and src.describe() == "labgrid NetworkSerialPort rfc2217://10.0.0.2:4001"
    assert exported.console("gone") == (None, None)  # not held: nothing
    # the run's power callback: the inventory's table first, then the place's NetworkPowerPort
    power = lambda name: power_for(name, inventory, inv) or exported.power(name)  # noqa: E731 - as _PoolBoards
    assert power("own").source == "inventory power commands"
    assert power("plain").source == "labgrid NetworkPowerPort simplerest index 1"
    assert power("bad") is None and power("bad") is None
    assert said == ["labgrid place bad: labgrid NetworkPowerPort unusable: model ../../os is not a labgrid power "
                    "backend name; no power switch"]  # warned once


def test_run_json_consoles_keep_other_boards_and_note_an_unusable_console(tmp_path):
    from types import SimpleNamespace

    from harness.launchers.console import Consoles, note_consoles

    said = []
    consoles = Consoles(lambda name: (None, "labgrid NetworkSerialPort unusable: protocol ssh is not raw or rfc2217")
                        if name == "b" else (None, None), said.append)
    consoles.watch("a")  # no console at all: nothing recorded
    consoles.watch("b")
    doc = {"consoles": [{"board": "b", "source": "old", "log": None, "bytes": 0},
                        {"board": "earlier", "source": "inventory raw://h:1", "log": "boards/earlier/console.log",
                         "bytes": 10}]}
    note_consoles(doc, [SimpleNamespace(consoles=consoles)], run_dir=tmp_path, stop=True)
    assert [c["board"] for c in doc["consoles"]] == ["b", "earlier"]
    assert doc["consoles"][0] == {"board": "b", "source": None, "log": None, "bytes": 0,
                                  "error": "labgrid NetworkSerialPort unusable: protocol ssh is not raw or rfc2217"}
    assert said == ["board b: labgrid NetworkSerialPort unusable: protocol ssh is not raw or rfc2217; no console log"]
    assert consoles.tail("a") is None and consoles.tail("b") is None and not (tmp_path / "boards").exists()
