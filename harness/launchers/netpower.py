"""A board's power switch from the labgrid exporter: the place's `NetworkPowerPort` (labgrid.resource.power: model,
host, index: a PDU outlet the exporter publishes), switched through labgrid's own `NetworkPowerDriver`
(labgrid.driver.powerdriver, its backend module labgrid/driver/power/<model>.py, e.g. `simplerest`, `netio`,
`gude`, `rest`), on the same switch / cycle / boot-wait path as the inventory's commands (harness/launchers/power.py).

What the coordinator hands out is what an exporter published: untrusted. `model` must name one of labgrid's power
backends (a plain module name that exists in labgrid.driver.power: labgrid imports it by that name), `host` one
printable line, `index` an integer. An unusable port is one warning line; the board then has no switch. The
inventory's `power` table for the place, if present, wins (docs/remote.md, "Power").
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Any

from harness.launchers.power import DEFAULT_BOOT_TIMEOUT_S, DEFAULT_COMMAND_TIMEOUT_S
from harness.names import shown

_MODEL = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class NetworkPowerSpec:
    model: str
    host: str
    index: str
    delay_s: float = 2.0
    boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S

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
