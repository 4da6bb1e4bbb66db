"""A board's power switch from the labgrid exporter, on the same switch / cycle / boot-wait path as the inventory's
commands (harness/launchers/power.py):
- the place's `NetworkPowerPort` (labgrid.resource.power: model, host, index: a PDU outlet the exporter publishes),
  switched through labgrid's own `NetworkPowerDriver` (labgrid.driver.powerdriver, its backend module
  labgrid/driver/power/<model>.py, e.g. `simplerest`, `netio`, `gude`, `rest`);
- else its `PDUDaemonPort` (labgrid.resource.power: host, pdu, index: an outlet of a PDU that a PDUDaemon
  (github.com/pdudaemon/pdudaemon, the LAVA labs' PDU queue) drives), switched through labgrid's `PDUDaemonDriver`:
  GET http://HOST[:16421]/power/control/{on,off,reboot}?hostname=PDU&port=INDEX[&delay=S], pdudaemon's HTTP
  listener (pdudaemon/httplistener.py), which answers 200 once it has queued the request.

What the coordinator hands out is what an exporter published: untrusted. `model` must name one of labgrid's power
backends (a plain module name that exists in labgrid.driver.power: labgrid imports it by that name), `host` one
printable line, `index` an integer. labgrid pastes a PDUDaemonPort's host, pdu and index into the URL unescaped,
so there `host` must be a host name or IPv4 address with an optional port and `pdu` a plain name (letters,
digits, `.`, `_`, `-`): anything else could add query parameters or point the request elsewhere. An unusable port
is one warning line; the board then has no switch. The inventory's `power` table for the place, if present, wins
(docs/remote.md, "Power").

A `NetworkUSBPowerPort` (a port of a power-switching USB hub on the exporter, as Raspberry Pis powered from a hub
often are) is switched through labgrid's public command line, as the place's holder: `labgrid-client -x COORDINATOR
--place PLACE power on|off|cycle --name RESOURCE`, with LG_HOSTNAME and LG_USERNAME (labgrid's documented identity
variables) set to the holder's name. labgrid-client then builds the place's RemotePlace target and runs its
`USBPowerDriver`: uhubctl on the exporter, over labgrid's SSH connection manager (labgrid.util.ssh, the lab's own SSH
setup for its exporters). The command needs the place acquired by that holder: a run holds it; `bench pool power`
takes it for the switching and gives it back. Before any of it, the port's parameters are checked here: `host` a
host name or IPv4 address (ssh takes it as its destination, so never an option), `path` a USB hub location as
uhubctl's `-l` takes it (`1-1.3`), `index` a port number, the resource name a plain name. labgrid-client reads the
resource from the coordinator again when it switches.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any

from harness.launchers.power import DEFAULT_BOOT_TIMEOUT_S, DEFAULT_COMMAND_TIMEOUT_S
from harness.names import shown

_MODEL = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?"  # a host name or IPv4 address, never an option
_HUB_HOST = re.compile(_HOST)
_PDUD_HOST = re.compile(_HOST + r"(?::[0-9]{1,5})?")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HUB_PATH = re.compile(r"[0-9]{1,3}-[0-9]{1,3}(?:\.[0-9]{1,3}){0,6}")  # uhubctl -l: bus-port[.port...]


@dataclass(frozen=True, kw_only=True)
class _Timing:
    """What every exported switch carries besides its port, as the inventory's power table does (power.PowerSpec):
    labgrid's wait between off and on, the wait for the board's shell after a cycle, each switching's bound."""

    delay_s: float = 2.0
    boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S


@dataclass(frozen=True)
class NetworkPowerSpec(_Timing):
    model: str
    host: str
    index: str

    @property
    def source(self) -> str:
        return f"labgrid NetworkPowerPort {self.model} index {self.index}"

    def driver(self, target):
        """labgrid's NetworkPowerDriver bound to this port on `target` (labgrid's Target API)."""
        from labgrid.driver import NetworkPowerDriver
        from labgrid.resource import NetworkPowerPort

        NetworkPowerPort(target, "power-port", model=self.model, host=self.host, index=self.index)
        return NetworkPowerDriver(target, "power", delay=self.delay_s)


def exported_power(params: Any) -> tuple[NetworkPowerSpec | None, str | None]:
    """A NetworkPowerPort as the coordinator hands it out: the spec, or None and why it is unusable."""
    if not isinstance(params, dict):
        return None, "labgrid NetworkPowerPort without parameters"
    model, host, index = params.get("model"), params.get("host"), params.get("index")
    problem = None
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        problem = f"model {shown(model)} is not a labgrid power backend name"
    elif importlib.util.find_spec(f"labgrid.driver.power.{model}") is None:
        problem = f"model {shown(model)} is not one of labgrid's power backends (labgrid/driver/power/)"
    elif not isinstance(host, str) or not host or not host.isprintable() or len(host) > 1024:
        problem = f"host {shown(host)} is not one printable line"
    elif isinstance(index, bool) or not isinstance(index, (int, str)) or not str(index).strip().isdigit():
        problem = f"index {shown(index)} is not a non-negative integer"
    if problem:
        return None, f"labgrid NetworkPowerPort unusable: {problem}"
    return NetworkPowerSpec(model=model, host=host, index=str(int(str(index).strip()))), None


@dataclass(frozen=True)
class PDUDaemonSpec(_Timing):
    host: str
    pdu: str
    index: int

    @property
    def source(self) -> str:
        return f"labgrid PDUDaemonPort {self.pdu} index {self.index}"

    def driver(self, target):
        """labgrid's PDUDaemonDriver bound to this port on `target` (labgrid's Target API)."""
        from labgrid.driver import PDUDaemonDriver
        from labgrid.resource import PDUDaemonPort

        PDUDaemonPort(target, "power-port", host=self.host, pdu=self.pdu, index=self.index)
        return PDUDaemonDriver(target, "power", delay=self.delay_s)


def exported_pdudaemon(params: Any) -> tuple[PDUDaemonSpec | None, str | None]:
    """A PDUDaemonPort as the coordinator hands it out: the spec, or None and why it is unusable."""
    if not isinstance(params, dict):
        return None, "labgrid PDUDaemonPort without parameters"
    host, pdu, index = params.get("host"), params.get("pdu"), params.get("index")
    problem = None
    if not isinstance(host, str) or not _PDUD_HOST.fullmatch(host) or \
            (":" in host and not 0 < int(host.rsplit(":", 1)[1]) < 65536):
        problem = f"host {shown(host)} is not a host name or IPv4 address with an optional port"
    elif not isinstance(pdu, str) or not _PLAIN_NAME.fullmatch(pdu):
        problem = f"pdu {shown(pdu)} is not a plain name (letters, digits, '.', '_', '-')"
    elif isinstance(index, bool) or not isinstance(index, (int, str)) or not str(index).strip().isdigit():
        problem = f"index {shown(index)} is not a non-negative integer"
    if problem:
        return None, f"labgrid PDUDaemonPort unusable: {problem}"
    return PDUDaemonSpec(host=host, pdu=pdu, index=int(str(index).strip())), None


@dataclass(frozen=True)
class USBHubPortSpec(_Timing):
    """A NetworkUSBPowerPort, switched by labgrid-client as the place's holder (the module docstring). `place`,
    `coordinator` and `holder` are bound once the place is held (`held_by`)."""

    host: str
    path: str
    index: int
    resource: str
    place: str = ""
    coordinator: str = ""
    holder: str = ""

    @property
    def source(self) -> str:
        return f"labgrid NetworkUSBPowerPort hub {self.path} port {self.index} on {self.host}, through labgrid-client"

    def held_by(self, place: str, coordinator: str, holder: str) -> "USBHubPortSpec":
        return dataclasses.replace(self, place=place, coordinator=coordinator, holder=holder)

    def command(self, action: str) -> list[str]:
        """The labgrid-client command line for `action` (on, off, cycle), run as the holder."""
        if not (self.place and self.coordinator and "/" in self.holder):
            raise ValueError("a USB hub port is switched only for a held place (held_by)")
        host, user = self.holder.split("/", 1)
        return ["env", "-u", "LG_ENV", "-u", "LG_TOKEN", f"LG_HOSTNAME={host}", f"LG_USERNAME={user}",
                sys.executable, "-m", "labgrid.remote.client", "-x", self.coordinator, f"--place={self.place}",
                "power", action, f"--name={self.resource}",
                *(["-t", f"{self.delay_s:g}"] if action == "cycle" else [])]

    def driver(self, target):
        """labgrid's ExternalPowerDriver running this port's labgrid-client commands on `target`."""
        from labgrid.driver import ExternalPowerDriver

        return ExternalPowerDriver(target, "power", cmd_on=shlex.join(self.command("on")),
                                   cmd_off=shlex.join(self.command("off")),
                                   cmd_cycle=shlex.join(self.command("cycle")), delay=self.delay_s)


def exported_usb_hub_port(params: Any) -> tuple[USBHubPortSpec | None, str | None]:
    """A NetworkUSBPowerPort as the coordinator hands it out (with the place's name for it, `resource`, added by
    the pool): the spec, or None and why it is unusable."""
    if not isinstance(params, dict):
        return None, "labgrid NetworkUSBPowerPort without parameters"
    host, path, index, name = (params.get(k) for k in ("host", "path", "index", "resource"))
    problem = None
    if not isinstance(host, str) or not _HUB_HOST.fullmatch(host):
        problem = f"host {shown(host)} is not a host name or IPv4 address"
    elif not isinstance(path, str) or not _HUB_PATH.fullmatch(path):
        problem = f"path {shown(path)} is not a USB hub location (bus-port[.port...], as uhubctl -l takes it)"
    elif isinstance(index, bool) or not isinstance(index, int) or not 0 < index < 256:
        problem = f"index {shown(index)} is not a hub port number"
    elif not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        problem = f"resource name {shown(name)} is not a plain name (letters, digits, '.', '_', '-')"
    if problem:
        return None, f"labgrid NetworkUSBPowerPort unusable: {problem}"
    return USBHubPortSpec(host=host, path=path, index=index, resource=name), None


def exported_switch(exported: dict[str, Any]) -> tuple[NetworkPowerSpec | PDUDaemonSpec | USBHubPortSpec | None,
                                                       str | None]:
    """The power switch among what a place's exporter publishes (resource class -> parameters): its
    NetworkPowerPort, else its PDUDaemonPort, else its NetworkUSBPowerPort; (None, None) when it publishes none,
    (None, why) when the one it publishes is unusable."""
    for cls, read in (("NetworkPowerPort", exported_power), ("PDUDaemonPort", exported_pdudaemon),
                      ("NetworkUSBPowerPort", exported_usb_hub_port)):
        if cls in exported:
            return read(exported[cls])
    return None, None
