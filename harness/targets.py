"""Target availability: runtime + provider/delegate present, and the device is what the profile is for.

A profile for a specific board only makes sense on that board: running the rpi profile on an x86 laptop would
produce numbers labelled "Raspberry Pi" that are not. The profile's `[board]` table says how to recognise it:
`devicetree_model_prefix` (the start of /proc/device-tree/model, e.g. "Raspberry Pi") and/or `release_file` (a
file only that board has, e.g. /etc/nv_tegra_release on a Jetson, or the Edge TPU's /dev/apex_0 on a Coral M.2/PCIe
card or Dev Board) and/or `usb_ids` (comma-separated vendor:product ids of a USB device, e.g. the Coral USB
Accelerator's 1a6e:089a before and 18d1:9302 after its firmware is loaded, as in libedgetpu's udev rules); any one
matching is enough.
"""

from __future__ import annotations

from pathlib import Path

from harness import specs
from harness.errors import UsageError
from harness.runners import backend_availability

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
USB_DEVICES = Path("/sys/bus/usb/devices")


def _device_model() -> str:
    try:
        return DEVICE_TREE_MODEL.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def usb_ids() -> set[str]:
    """vendor:product of every USB device this machine sees (sysfs idVendor/idProduct), lower case."""
    found = set()
    try:
        for dev in USB_DEVICES.iterdir():
            try:
                found.add(f"{(dev / 'idVendor').read_text().strip()}:{(dev / 'idProduct').read_text().strip()}".lower())
            except OSError:
                continue  # interfaces (1-1:1.0) have no ids
    except OSError:
        pass
    return found


def board_matches(board: dict | None) -> bool:
    """True when the profile names no board, or when this machine is that board."""
    if not board:
        return True
    prefix, release, usb = board.get("devicetree_model_prefix"), board.get("release_file"), board.get("usb_ids")
    if prefix and _device_model().startswith(prefix):
        return True
    if usb and {u.strip().lower() for u in usb.split(",")} & usb_ids():
        return True
    return bool(release) and Path(release).exists()


def reference_target_ids() -> list[str]:
    """The targets whose profile says `reference = true`: their fp32 results are what other targets are judged by."""
    return [t for t in specs.target_ids() if specs.get_target(t).reference]


def reference_target_id() -> str:
    ids = reference_target_ids()
    if len(ids) != 1:
        raise UsageError(f"exactly one target profile must say reference = true; found {len(ids)}: "
                         f"{', '.join(ids) or '(none)'}")
    return ids[0]


def target_status(target_ids: list[str] | None = None) -> list[dict]:
    rows = []
    for tid in target_ids or specs.target_ids():
        target = specs.get_target(tid)
        backends, reasons = [], []
        for b in target.backends:
            ok, reason = backend_availability(b)
            backends.append({"runtime": b.runtime, "requested": b.requested, "variants": list(b.variants),
                             "available": ok, "reason": reason})
            if not ok:
                reasons.append(f"{b.runtime}/{b.requested}: {reason}")
        device_ok = board_matches(dict(target.board))
        if not device_ok:
            label = target.board.get("name", target.name)
            reasons.insert(0, f"this machine is not a {label} (device model: {_device_model() or 'unknown'})")
        available = device_ok and any(b["available"] for b in backends)
        rows.append({"target": tid, "name": target.name, "source": specs.target_source(target),
                     "path": str(target.path), "available": available,
                     "reason": "; ".join(reasons) or None, "backends": backends, "telemetry": list(target.telemetry)})
    return rows
