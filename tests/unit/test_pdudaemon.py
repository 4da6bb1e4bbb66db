"""A place's PDUDaemonPort as its power switch (harness/launchers/netpower.py): what an exporter publishes is checked
before labgrid pastes it into a URL, the exporter's NetworkPowerPort wins over it, and labgrid's real
PDUDaemonDriver switches the outlet through a loopback server that answers as pdudaemon's HTTP listener does
(pdudaemon 1.1.1: pdudaemon/httplistener.py routes, pdudaemon/listener.py parse_http and process_request: an unknown
PDU or a missing port is 500 "Invalid request", reboot is off, the delay, on, then 200)."""

from __future__ import annotations

import http.server
import sys
import threading
import time
import urllib.parse
from types import SimpleNamespace

import pytest

from harness.errors import UnavailableError
from harness.launchers.netpower import PDUDaemonSpec, exported_pdudaemon, exported_switch


class PDUDaemonListener(http.server.BaseHTTPRequestHandler):
    pdus = {"pdu1"}
    jobs: list[tuple[str, str, str]] = []  # (pdu, port, on|off) in the order the daemon ran them
    queries: list[str] = []

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        type(self).queries.append(self.path)
        entry = url.path.lstrip("/").split("/")
        data = urllib.parse.parse_qs(url.query)
        host, port, delay = (data.get(k, [None])[0] for k in ("hostname", "port", "delay"))
        request = entry[2] if len(entry) == 3 and entry[:2] == ["power", "control"] else None
        if request not in ("on", "off", "reboot") or not host or not port or host not in self.pdus:
            return self._answer(500, "Invalid request\n")
        if request == "reboot":
            self.jobs.append((host, port, "off"))
            time.sleep(int(delay if delay is not None else 5))
            self.jobs.append((host, port, "on"))
        else:
            self.jobs.append((host, port, request))
        self._answer(200, "OK - accepted request\n")

    def _answer(self, status: int, text: str):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def pdudaemon():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PDUDaemonListener)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    PDUDaemonListener.jobs, PDUDaemonListener.queries = [], []
    yield httpd
    httpd.shutdown()


def test_what_an_exporter_publishes_is_checked():
    spec, problem = exported_pdudaemon({"host": "pdud.lab:16421", "pdu": "apc-rack2", "index": "7"})
    assert problem is None and spec == PDUDaemonSpec(host="pdud.lab:16421", pdu="apc-rack2", index=7)
    assert spec.source == "labgrid PDUDaemonPort apc-rack2 index 7"
    for params, why in (({"host": "h/evil?", "pdu": "p", "index": 0}, "host"),
                        ({"host": "user@h", "pdu": "p", "index": 0}, "host"),
                        ({"host": "h:99999", "pdu": "p", "index": 0}, "host"),
                        ({"host": "h\n", "pdu": "p", "index": 0}, "host"),
                        ({"host": "h", "pdu": "p&port=9", "index": 0}, "pdu"),
                        ({"host": "h", "pdu": "\x1b[2J", "index": 0}, "pdu"),
                        ({"host": "h", "pdu": "p", "index": "-1"}, "index"),
                        ({"host": "h", "pdu": "p", "index": True}, "index"),
                        (None, "without parameters")):
        spec, problem = exported_pdudaemon(params)
        assert spec is None and problem.startswith("labgrid PDUDaemonPort ") and why in problem
        assert "\x1b" not in problem and "\n" not in problem


def test_the_network_power_port_wins_and_neither_is_none():
    pdud = {"host": "pdud", "pdu": "p", "index": 1}
    netp = {"model": "simplerest", "host": "http://pdu/{index}/{value}", "index": 2}
    assert exported_switch({"PDUDaemonPort": pdud})[0].source == "labgrid PDUDaemonPort p index 1"
    assert exported_switch({"PDUDaemonPort": pdud, "NetworkPowerPort": netp})[0].source == \
        "labgrid NetworkPowerPort simplerest index 2"
    assert exported_switch({"NetworkSerialPort": {"host": "h", "port": 1}}) == (None, None)


def test_a_place_with_only_a_pdudaemon_port_has_a_switch():
    from harness.launchers.exported import Exported

    said = []
    held = {"rpi-a": SimpleNamespace(exported={"PDUDaemonPort": {"host": "pdud", "pdu": "p", "index": 3}}),
            "rpi-b": SimpleNamespace(exported={"PDUDaemonPort": {"host": "pdud", "pdu": "p#x", "index": 3}})}
    exported = Exported({}, None, held, said.append)
    assert exported.power("rpi-a").source == "labgrid PDUDaemonPort p index 3"
    assert exported.power("rpi-b") is None and exported.power("rpi-b") is None and exported.power("gone") is None
    assert said == ["labgrid place rpi-b: labgrid PDUDaemonPort unusable: pdu p#x is not a plain name (letters, "
                    "digits, '.', '_', '-'); no power switch"]  # warned once


def test_labgrids_pdudaemon_driver_switches_the_outlet(pdudaemon):
    pytest.importorskip("labgrid")
    pytest.importorskip("requests")
    from harness.launchers.power import switch

    host = f"127.0.0.1:{pdudaemon.server_port}"
    spec = PDUDaemonSpec(host=host, pdu="pdu1", index=2, delay_s=0.0)
    switch(spec, "rpi-a", "off")
    switch(spec, "rpi-a", "cycle")
    assert PDUDaemonListener.queries == ["/power/control/off?hostname=pdu1&port=2",
                                         "/power/control/reboot?hostname=pdu1&port=2&delay=0"]
    assert PDUDaemonListener.jobs == [("pdu1", "2", "off"), ("pdu1", "2", "off"), ("pdu1", "2", "on")]
    with pytest.raises(UnavailableError) as exc:  # a PDU the daemon does not know: its 500
        switch(PDUDaemonSpec(host=host, pdu="pdu9", index=2), "rpi-a", "on")
    msg = exc.value.message
    assert msg.startswith("board rpi-a: power on failed (labgrid PDUDaemonPort pdu9 index 2): ")
    assert "500" in msg and "\n" not in msg


def test_a_usb_hub_port_is_switched_by_labgrid_client_as_the_places_holder():
    """A NetworkUSBPowerPort becomes labgrid-client's `power` for the held place, run as its holder (LG_HOSTNAME,
    LG_USERNAME); a PDU outlet published beside it wins; it is never switched for a place nobody holds."""
    hub = {"host": "exporter-2", "busnum": 1, "devnum": 4, "path": "1-1.3", "vendor_id": 0x2109, "model_id": 0x2817,
           "index": 2, "resource": "hub-port"}
    spec, problem = exported_switch({"NetworkUSBPowerPort": hub, "NetworkSerialPort": {"host": "h", "port": 1}})
    assert problem is None
    assert spec.source == "labgrid NetworkUSBPowerPort hub 1-1.3 port 2 on exporter-2, through labgrid-client"
    with pytest.raises(ValueError):
        spec.command("cycle")
    held = spec.held_by("rpi-u", "10.0.0.5:20408", "ci-1/lab+bench-42-1700000000000")
    assert held.command("cycle") == [
        "env", "-u", "LG_ENV", "-u", "LG_TOKEN", "LG_HOSTNAME=ci-1", "LG_USERNAME=lab+bench-42-1700000000000",
        sys.executable, "-m", "labgrid.remote.client", "-x", "10.0.0.5:20408", "--place=rpi-u", "power", "cycle",
        "--name=hub-port", "-t", "2"]
    assert held.command("off")[-3:] == ["power", "off", "--name=hub-port"]
    netp = {"model": "simplerest", "host": "http://pdu/{index}/{value}", "index": 2}
    assert exported_switch({"NetworkUSBPowerPort": hub, "NetworkPowerPort": netp})[0].source == \
        "labgrid NetworkPowerPort simplerest index 2"


@pytest.mark.parametrize("key,value,why", [
    ("host", "-oProxyCommand=touch /tmp/x", "is not a host name or IPv4 address"),
    ("host", "e\x1b[2J\nx", "is not a host name or IPv4 address"),
    ("path", "1-1.3 -a off", "is not a USB hub location"),
    ("path", None, "is not a USB hub location"),
    ("index", True, "is not a hub port number"),
    ("index", "2", "is not a hub port number"),
    ("resource", "--place=other", "is not a plain name"),
])
def test_a_usb_hub_port_the_exporter_got_wrong_is_one_line_and_no_switch(key, value, why):
    """What the coordinator hands out is untrusted: ssh takes `host` as its destination and uhubctl `path` as an
    argument, so anything but a plain host, hub location, port and name is refused before labgrid-client runs."""
    hub = {"host": "exporter-2", "path": "1-1.3", "index": 2, "resource": "hub-port", key: value}
    spec, problem = exported_switch({"NetworkUSBPowerPort": hub})
    assert spec is None and problem.startswith("labgrid NetworkUSBPowerPort unusable: ") and why in problem
    assert "\x1b" not in problem and "\n" not in problem
    assert exported_switch({"NetworkUSBPowerPort": None}) == (None, "labgrid NetworkUSBPowerPort without parameters")
