"""Target availability: runtime + provider/delegate present, and the device is what the profile is for."""

from __future__ import annotations

from pathlib import Path

from harness import specs
from harness.runners import backend_availability

# Profiles for a specific board only make sense on that board: running the rpi profile on an x86 laptop would
# produce numbers labelled "Raspberry Pi" that are not.
_DEVICE_CHECKS = {
    "rpi": ("Raspberry Pi", lambda: _device_model().startswith("Raspberry Pi")),
    "jetson": ("NVIDIA Jetson", lambda: Path("/etc/nv_tegra_release").exists() or "jetson" in _device_model().lower()),
}


def _device_model() -> str:
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


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
        device_ok = True
        if tid in _DEVICE_CHECKS:
            label, check = _DEVICE_CHECKS[tid]
            if not check():
                device_ok = False
                reasons.insert(0, f"this machine is not a {label} (device model: {_device_model() or 'unknown'})")
        available = device_ok and any(b["available"] for b in backends)
        rows.append({"target": tid, "name": target.name, "available": available,
                     "reason": "; ".join(reasons) or None, "backends": backends, "telemetry": list(target.telemetry)})
    return rows
