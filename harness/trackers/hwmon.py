"""Board power from Linux hwmon sensors: INA219/INA226/INA260/INA3221 and any hwmon device that reports power.

Units and files follow the kernel's hwmon sysfs ABI (Documentation/hwmon/sysfs-interface.rst):
  power<N>_input  microwatts        curr<N>_input  milliamperes        in<N>_input  millivolts
  <kind><N>_label an optional rail name                                 name         the driver ("ina226")
Devices are found by enumerating /sys/class/hwmon/hwmon*/ and reading `name`, never by hwmon number (numbers change
across reboots). A channel with power<N>_input is read as is. The INA3221 (Jetson's rail monitor) reports no power:
its channel N is bus voltage in<N>_input times current curr<N>_input (ina3221 driver: in1-3 are the channels' bus
voltages, in4-6 their shunt voltages). Other devices' curr/in pairs are not multiplied: their in<N> is not
documented to be the same rail as curr<N>.

Which channel is the board's total power? Rails nest (a Jetson's VDD_IN feeds VDD_CPU_GPU_CV), so summing every
channel double-counts. The total (`hwmon_power_mw`) is, in order: the channels named in BENCH_HWMON_RAILS
("ina226" or "ina3221:VDD_IN", comma-separated, summed); else a channel whose label says it is the input
(VDD_IN, IN, VIN, TOTAL, board); else, when exactly one channel reports power, that one. Otherwise the probe
reports every rail and no total, saying why, and energy stays unavailable rather than wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from harness.errors import UnavailableError
from harness.trackers.probe import PollingProbe, Reading

HWMON_ROOT = Path("/sys/class/hwmon")
ROOT_ENV = "BENCH_HWMON_ROOT"     # a recorded or fake tree (tests, the emulated board)
RAILS_ENV = "BENCH_HWMON_RAILS"   # which channels make the total, when labels cannot say
INPUT_LABELS = {"vdd_in", "in", "vin", "total", "board", "sys_in", "vbus"}
TOTAL_FIELD = "hwmon_power_mw"
NO_SENSORS = "no hwmon device reports power (power*_input, or an ina3221's curr/in pairs)"
_POWER = re.compile(r"^power(\d+)_input$")
_CURR = re.compile(r"^curr(\d+)_input$")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "rail"


def _read_int(path: Path) -> int | None:
    """An integer sysfs attribute; None when unreadable (a sensor can fail one read: skip, never guess)."""
    try:
        if not path.is_file():
            return None
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_str(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Channel:
    """One power-reporting channel of one hwmon device."""

    def __init__(self, device: Path, driver: str, index: str, *, computed: bool) -> None:
        self.device, self.driver, self.index, self.computed = device, driver, index, computed
        kind = "curr" if computed else "power"
        self.label = _read_str(device / f"{kind}{index}_label") or _read_str(device / f"in{index}_label")
        self.field = f"hwmon_{_key(driver)}_{_key(self.label or 'ch' + index)}_mw"

    def read_mw(self) -> float | None:
        if not self.computed:
            uw = _read_int(self.device / f"power{self.index}_input")
            return None if uw is None else uw / 1000.0
        ma = _read_int(self.device / f"curr{self.index}_input")
        mv = _read_int(self.device / f"in{self.index}_input")
        return None if ma is None or mv is None else ma * mv / 1000.0

    def names(self) -> set[str]:
        """What BENCH_HWMON_RAILS may call it: 'driver' or 'driver:label' or 'driver:N'."""
        out = {self.driver, f"{self.driver}:{self.index}"}
        if self.label:
            out.add(f"{self.driver}:{self.label}")
        return {n.lower() for n in out}


def discover(root: Path) -> list[Channel]:
    """Every power channel under `root` (hwmon*/), in a stable order."""
    channels: list[Channel] = []
    for dev in sorted(root.glob("hwmon*")):
        driver = _read_str(dev / "name") or dev.name
        for path in sorted(dev.iterdir(), key=lambda p: p.name) if dev.is_dir() else []:
            if m := _POWER.match(path.name):
                channels.append(Channel(dev, driver, m.group(1), computed=False))
            elif driver == "ina3221" and (m := _CURR.match(path.name)) and (dev / f"in{m.group(1)}_input").is_file():
                channels.append(Channel(dev, driver, m.group(1), computed=True))
    return channels


def choose_total(channels: list[Channel], rails: str | None) -> tuple[list[Channel], str]:
    """The channels summed into the total, and how they were chosen (recorded in the probe's info)."""
    if rails:
        wanted = {r.strip().lower() for r in rails.split(",") if r.strip()}
        picked = [c for c in channels if c.names() & wanted]
        if not picked:
            raise UnavailableError(f"{RAILS_ENV}={rails!r} names no channel; found: "
                                   f"{', '.join(sorted(f'{c.driver}:{c.label or c.index}' for c in channels))}")
        return picked, f"{RAILS_ENV}={rails}"
    inputs = [c for c in channels if c.label and _key(c.label) in INPUT_LABELS]
    if inputs:
        return inputs[:1], f"the input rail '{inputs[0].label}' of {inputs[0].driver}"
    if len(channels) == 1:
        return channels, f"the only power channel ({channels[0].driver})"
    return [], (f"{len(channels)} power channels and none labelled as the input; set {RAILS_ENV} "
                "(e.g. ina226 or ina3221:VDD_IN) to name the board's total")


class HwmonProbe(PollingProbe):
    """Polls hwmon power channels (sysfs reads: no process spawn, cheap at the default interval)."""

    name = "hwmon"
    power_fields = (TOTAL_FIELD,)

    def __init__(self, root: Path | None = None, rails: str | None = None) -> None:
        super().__init__()
        self.root = Path(root or os.environ.get(ROOT_ENV) or HWMON_ROOT)
        self.rails = rails if rails is not None else os.environ.get(RAILS_ENV)
        self.channels: list[Channel] = []
        self.total: list[Channel] = []

    def start(self, interval_s: float) -> None:
        self.channels = discover(self.root)
        if not self.channels:
            raise UnavailableError(f"{NO_SENSORS} under {self.root}")
        self.total, how = choose_total(self.channels, self.rails)
        self.info = {"root": str(self.root), "total_from": how,
                     "channels": [{"driver": c.driver, "label": c.label, "index": c.index, "field": c.field,
                                   "computed_from": "curr*in" if c.computed else "power_input"}
                                  for c in self.channels]}
        super().start(interval_s)

    def read(self) -> Reading:
        r: Reading = {}
        for c in self.channels:
            mw = c.read_mw()
            if mw is not None:
                r[c.field] = mw
        if self.total:
            parts = [r.get(c.field) for c in self.total]
            if all(p is not None for p in parts):
                r[TOTAL_FIELD] = float(sum(parts))  # type: ignore[arg-type]
        if not r:
            raise UnavailableError(f"hwmon: no power channel under {self.root} could be read")
        return r

    def extra_summary(self) -> dict[str, Any]:
        return {} if self.total else {"no_total": self.info.get("total_from")}
