"""labgrid's own exporter (labgrid.remote.exporter, 26.x) publishing a power-switching USB hub's port that this
machine does not have: a stand-in for the one thing a lab's exporter learns from udev.

labgrid's `USBPowerPortExport` finds the hub through udev (busnum, devnum, path of a real device) and publishes it
as a `NetworkUSBPowerPort` (host, busnum, devnum, path, vendor_id, model_id, index). Here the same class name is
published with those parameters read from the exporter's YAML instead, so the coordinator, the client and
labgrid's `USBPowerDriver` (which runs `ssh HOST -- uhubctl -l PATH -p INDEX -a ACTION`) are the real ones.
Usage, as labgrid-exporter: python tests/remote/usb_hub_exporter.py -c COORDINATOR -n NAME --hostname HOST YAML.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import attr
from labgrid.remote import exporter

PARAMS = ("busnum", "devnum", "path", "vendor_id", "model_id", "index")


@attr.s(eq=False)
class HubPortExport(exporter.ResourceExport):
    """A hub port that is always there: the parameters udev would give, from the YAML."""

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.data["cls"] = "NetworkUSBPowerPort"
        self.local = SimpleNamespace(avail=True, poll=lambda: None, **{k: self.local_params[k] for k in PARAMS})

    def _get_params(self):
        return {"host": self.host, **{k: getattr(self.local, k) for k in PARAMS}}


exporter.exports["USBPowerPort"] = HubPortExport

if __name__ == "__main__":
    sys.exit(exporter.main())
