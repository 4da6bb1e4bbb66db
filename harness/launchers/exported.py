"""What a held labgrid place's exporter publishes besides its NetworkService, for a run's session on that board
(docs/remote.md, "Pool"): the console (a `NetworkSerialPort`: harness/launchers/console.py) and the power switch (a
`NetworkPowerPort`, else a `PDUDaemonPort`, else a `NetworkUSBPowerPort`: harness/launchers/netpower.py). The
inventory's `console`/`power` for the place win; an unusable resource is one warning line (once per place) and the
board goes on without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


class Exported:
    def __init__(self, inventory: dict[str, Any], inv_path: Path | None, held: dict[str, Any],
                 log: Callable[[str], None]):
        self.inventory, self.inv_path, self.held, self.log = inventory, inv_path, held, log
        self._warned: set[tuple[str, str]] = set()

    def _params(self, place: str, cls: str):
        lease = self.held.get(place)
        return None if lease is None else (getattr(lease, "exported", None) or {}).get(cls)

    def console(self, place: str):
        """(ConsoleSource or None, why the place's console is unusable or None): the inventory's, else the
        place's NetworkSerialPort."""
        from harness.launchers.console import exported_console
        from harness.launchers.remote import console_for

        own = console_for(place, self.inventory, self.inv_path)
        if own is not None:
            return own, None
        params = self._params(place, "NetworkSerialPort")
        return (None, None) if params is None else exported_console(params)

    def power(self, place: str):
        """The place's power switch from its exporter (netpower.exported_switch: its NetworkPowerPort, else its
        PDUDaemonPort, else its NetworkUSBPowerPort), or None (none published, or unusable: warned once)."""
        from harness.launchers.netpower import USBHubPortSpec, exported_switch
        from harness.names import shown

        lease = self.held.get(place)
        spec, problem = exported_switch(getattr(lease, "exported", None) or {}) if lease is not None else (None, None)
        if problem and (place, problem) not in self._warned:
            self._warned.add((place, problem))
            self.log(f"labgrid place {shown(place)}: {problem}; no power switch")
        if isinstance(spec, USBHubPortSpec):  # labgrid-client switches it as the place's holder: this run
            spec = spec.held_by(lease.place, lease.coordinator, lease.holder)
        return spec
