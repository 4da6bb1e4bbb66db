"""Portable telemetry through psutil: CPU frequency and temperatures (any Linux/macOS/Windows host).

Temperatures come from psutil.sensors_temperatures() (hwmon on Linux), else /sys/class/thermal zones. Cloud
VMs usually expose neither: the probe then reports available=False, reason "no temperature sensors exposed",
while still recording CPU frequency, because a thermally blind run cannot be called thermally valid.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

from harness.trackers.probe import PollingProbe, Reading

THERMAL_ROOT = Path("/sys/class/thermal")
THERMAL_ROOT_ENV = "BENCH_THERMAL_ROOT"  # a recorded or fake thermal tree (tests, the emulated board)
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


def temperatures(thermal_root: Path | None = None) -> Reading:
    """What the probe reads as temperatures: psutil's, else the thermal zones. With $BENCH_THERMAL_ROOT (or a root
    given) the zones under that tree alone, so a recorded or fake tree is read as a board's would be."""
    override = thermal_root or os.environ.get(THERMAL_ROOT_ENV)
    if override:
        return thermal_zone_temps(Path(override))
    return psutil_temps() or thermal_zone_temps(THERMAL_ROOT)


def soc_temp_c(thermal_root: Path | None = None) -> tuple[float | None, str | None]:
    """(hottest temperature the probe reads, its field name), or (None, None) without a sensor: the SoC temperature
    used for a cool-down and recorded around a soak (harness/device/steady.py). The hottest sensor is the SoC's on
    the boards we support (a Pi's cpu_thermal, a Jetson's CPU/GPU zones) and the conservative choice elsewhere."""
    temps = {k: v for k, v in temperatures(thermal_root).items() if v == v}  # NaN is no reading
    if not temps:
        return None, None
    name = max(temps, key=lambda k: temps[k])
    return float(temps[name]), name


class PsutilProbe(PollingProbe):
    name = "psutil"

    def __init__(self, thermal_root: Path | None = None) -> None:
        super().__init__()
        self.thermal_root = thermal_root

    def read(self) -> Reading:
        r: Reading = temperatures(self.thermal_root)
        if not r:
            self.reason = self.reason or NO_SENSORS
        freq = psutil.cpu_freq()
        if freq is not None and freq.current > 0:
            r["cpu_freq_mhz"] = float(freq.current)
        return r
