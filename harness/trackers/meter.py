"""An external power meter read through a command the lab configures: one reading per call, total board power.

Configured where the other per-board sensor settings live (hwmon's BENCH_HWMON_RAILS): the environment of the
machine that runs the worker (a board's /etc/environment, docs/remote.md), and enabled by naming `meter` in the
target profile's `telemetry` list:

    BENCH_METER_CMD   the command, split by shlex and run without a shell ("rdserialtool --serial-device=/dev/rfcomm0
                      um25c", or a lab script that sends SCPI MEAS:POW? and prints the reply)
    BENCH_METER_UNIT  W or mW: the unit of a bare number (a reading that names its unit uses that one)

Where it runs: probes run beside the timed loop, in the worker process. For the cpu/cuda targets and `--emulate`
that is the host, so a USB meter on the host works; for a remote board the command runs ON THE BOARD, so the meter
must be readable from there (an INA read by a vendor tool, a USB meter paired with the board). A meter attached
to the HOST that drives a remote board is configured per board in the inventory (`meter`, `meter_unit`,
`meter_interval_s`) and read by the host around the board's windows: harness/launchers/host_meter.py runs this
class there, with the same parsing and refusals, and maps its readings onto the board's clock.

What one call may print (stdout, parsed strictly; anything else makes the probe unavailable, naming the command
and the first bad line, never a guessed value):
  - one line holding one number, optionally followed by its unit: `+1.234E+00` (SCPI's NR3 reply to MEAS:POW?,
    IEEE 488.2 section 8.7.4; Keysight/Yokogawa power analysers), `0.580`, `580 mW`, `0.580W`;
  - rdserialtool's UM24C/UM25C/UM34C readout (github.com/rfinnie/rdserialtool README, "Example"): the one line
    `USB: 5.062V, 0.1146A,  0.580W,   44.1Ω` gives its W field; the rest of that output is ignored.
SCPI's 9.9E37 (overrange, +infinity) and 9.91E37 (not a number) (SCPI-99 vol. 1, 7.2.1.4/7.2.1.5), negative power,
NaN and infinity are refused.
"""

from __future__ import annotations

import math
import os
import re
import shlex

from harness.errors import UnavailableError
from harness.trackers.probe import PollingProbe, Reading, run_tool, unparseable

CMD_ENV = "BENCH_METER_CMD"
UNIT_ENV = "BENCH_METER_UNIT"
TOTAL_FIELD = "meter_power_mw"
UNITS_MW = {"w": 1000.0, "mw": 1.0}
SCPI_SENTINELS = (9.9e37, 9.91e37)  # SCPI-99: +infinity (overrange) and NaN
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PLAIN = re.compile(rf"^\s*({_NUMBER})\s*(W|mW)?\s*$")
# rdserialtool um2xc: "USB: 5.062V, 0.1146A,  0.580W,   44.1Ω" (volts, amperes, watts, load ohms)
_UM_USB = re.compile(rf"^USB:\s*{_NUMBER}V,\s*{_NUMBER}A,\s*({_NUMBER})W,.*$")


def parse_reading(text: str, unit: str | None, tool: str = "meter", unit_setting: str = UNIT_ENV) -> float:
    """Power in mW from one call's stdout (formats in the module docstring). UnavailableError, naming `tool` and the
    bad line, for anything else; `unit_setting` names where `unit` was configured."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    usb = [m for ln in lines if (m := _UM_USB.match(ln.strip()))]
    if usb:
        if len(usb) > 1:
            raise unparseable(tool, usb[1].group(0))
        value, found = usb[0].group(1), "W"
    else:
        if len(lines) != 1:
            raise unparseable(tool, lines[1] if lines else "(no output)")
        m = _PLAIN.match(lines[0])
        if m is None:
            raise unparseable(tool, lines[0])
        value, found = m.group(1), m.group(2)
    scale = UNITS_MW.get((found or unit or "").lower())
    if scale is None:
        raise UnavailableError(f"{tool}: reading {value!r} has no unit and {unit_setting} is not W or mW "
                               f"(got {unit!r})")
    watts_or_mw = float(value)
    if not math.isfinite(watts_or_mw) or watts_or_mw < 0 or abs(watts_or_mw) in SCPI_SENTINELS:
        raise UnavailableError(f"{tool}: not a power reading: {value!r} (negative, overrange or not a number)")
    return watts_or_mw * scale


class MeterProbe(PollingProbe):
    """Runs BENCH_METER_CMD every interval (and once at start and stop); its reading is the total board power."""

    name = "meter"
    power_fields = (TOTAL_FIELD,)

    def __init__(self, cmd: str | None = None, unit: str | None = None) -> None:
        super().__init__()
        self.cmd = cmd if cmd is not None else os.environ.get(CMD_ENV, "")
        self.unit = unit if unit is not None else os.environ.get(UNIT_ENV)
        self.argv: list[str] = []

    def start(self, interval_s: float) -> None:
        try:
            self.argv = shlex.split(self.cmd)
        except ValueError as exc:
            raise UnavailableError(f"{CMD_ENV}: cannot split {self.cmd!r}: {exc}") from None
        if not self.argv:
            raise UnavailableError(f"{CMD_ENV} is not set: no meter configured on this machine")
        if self.unit is not None and self.unit.lower() not in UNITS_MW:
            raise UnavailableError(f"{UNIT_ENV} must be W or mW, got {self.unit!r}")
        self.info = {"command": self.argv[0], "unit": self.unit,
                     "runs_on": "the machine running the worker (the board, for a remote target)"}
        super().start(interval_s)

    def read(self) -> Reading:
        out = run_tool(self.argv)
        return {TOTAL_FIELD: parse_reading(out, self.unit, tool=f"meter ({self.argv[0]})")}
