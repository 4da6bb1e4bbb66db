"""Portable telemetry through psutil: CPU frequency and temperatures (any Linux/macOS/Windows host).

Temperatures come from psutil.sensors_temperatures() (hwmon on Linux), else /sys/class/thermal zones. Cloud
VMs usually expose neither: the probe then reports available=False, reason "no temperature sensors exposed",
while still recording CPU frequency, because a thermally blind run cannot be called thermally valid.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil

from harness.trackers.probe import PollingProbe, Reading

THERMAL_ROOT = Path("/sys/class/thermal")
NO_SENSORS = "no temperature sensors exposed"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "sensor"


def thermal_zone_temps(root: Path = THERMAL_ROOT) -> Reading:
    """{<zone type>_temp_c: value} from /sys/class/thermal/thermal_zone*/{type,temp} (millidegrees C)."""
    out: Reading = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip() or zone.name
            out[f"{_key(kind)}_temp_c"] = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue  # zones can be unreadable or disabled; skip rather than fail the window
    return out


def psutil_temps() -> Reading:
    """{<chip>_temp_c: hottest current reading of that chip} from psutil (empty where unsupported)."""
    try:
        chips = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return {}
    return {f"{_key(chip)}_temp_c": max(e.current for e in entries) for chip, entries in chips.items() if entries}


class PsutilProbe(PollingProbe):
    name = "psutil"

    def __init__(self, thermal_root: Path = THERMAL_ROOT) -> None:
        super().__init__()
        self.thermal_root = thermal_root

    def read(self) -> Reading:
        r: Reading = psutil_temps() or thermal_zone_temps(self.thermal_root)
        if not r:
            self.reason = self.reason or NO_SENSORS
        freq = psutil.cpu_freq()
        if freq is not None and freq.current > 0:
            r["cpu_freq_mhz"] = float(freq.current)
        return r
