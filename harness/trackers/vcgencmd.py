"""Raspberry Pi telemetry through the firmware's vcgencmd: throttle flags, SoC temperature, ARM clock.

get_throttled bits (Raspberry Pi documentation, "vcgencmd get_throttled"):
  0 under-voltage detected, 1 arm frequency capped, 2 currently throttled, 3 soft temperature limit active,
  16-19 the same four conditions "has occurred since boot".
A benchmark whose window sees any "now" bit, or a new "occurred" bit, ran on a slowed-down CPU.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, TypeVar

from harness.trackers.probe import PollingProbe, Reading, run_tool, unparseable

THROTTLE_BITS: dict[int, str] = {
    0: "under_voltage_now",
    1: "arm_freq_capped_now",
    2: "throttled_now",
    3: "soft_temp_limit_now",
    16: "under_voltage_occurred",
    17: "arm_freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}
NOW_MASK = 0xF
OCCURRED_MASK = 0xF << 16

_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+)")
_TEMP = re.compile(r"temp=(-?\d+(?:\.\d+)?)'C")
_CLOCK = re.compile(r"frequency\(\d+\)=(\d+)")
# `vcgencmd pmic_read_adc` on a Pi 5 (firmware 2023-10 and later): one line per ADC channel,
# "   VDD_CORE_A current(7)=0.70758000A" / "   VDD_CORE_V volt(15)=0.88171300V". Rails with both a current and a
# voltage channel (the same name less its _A/_V suffix) give power; EXT5V_V and BATT_V have no current channel.
_PMIC = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=(-?\d+(?:\.\d+)?)([AV])\s*$")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
T = TypeVar("T")


def decode_throttled(value: int) -> list[str]:
    """Names of the set bits of a get_throttled value, in bit order."""
    return [name for bit, name in THROTTLE_BITS.items() if value >> bit & 1]


def _match(pattern: re.Pattern[str], text: str) -> str:
    m = pattern.search(text)
    if m is None:
        raise ValueError(f"expected {pattern.pattern!r}, got {text.strip()!r}")
    return m.group(1)


def parse_throttled(text: str) -> int:
    """'throttled=0x50005' -> 0x50005. Raises ValueError on anything else."""
    return int(_match(_THROTTLED, text), 16)


def parse_temp(text: str) -> float:
    """"temp=48.3'C" -> 48.3."""
    return float(_match(_TEMP, text))


def parse_clock_mhz(text: str) -> float:
    """'frequency(48)=1500398464' (Hz) -> 1500.398464 MHz."""
    return int(_match(_CLOCK, text)) / 1e6


def parse_pmic_read_adc(text: str) -> dict[str, dict[str, float]]:
    """{rail: {"A": amperes, "V": volts}} from `vcgencmd pmic_read_adc`. Raises ValueError when no line parses
    (a Pi 4 answers with an error text instead) or a line's unit contradicts its suffix."""
    rails: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _PMIC.match(line)
        if m is None:
            raise ValueError(f"unexpected pmic_read_adc line {line.strip()!r}")
        rail, suffix, value, unit = m.groups()
        if suffix != unit:
            raise ValueError(f"unit {unit} on a _{suffix} channel: {line.strip()!r}")
        rails.setdefault(rail, {})[suffix] = float(value)
    if not rails:
        raise ValueError("no pmic_read_adc line")
    return rails


def pmic_rails_mw(rails: dict[str, dict[str, float]]) -> dict[str, float]:
    """Power per rail (mW) for the rails with both a current and a voltage reading."""
    return {rail: v["A"] * v["V"] * 1000.0 for rail, v in rails.items() if "A" in v and "V" in v}


def _vcgencmd(args: list[str], parse: Callable[[str], T]) -> T:
    text = run_tool(["vcgencmd", *args])
    try:
        return parse(text)
    except ValueError:
        raise unparseable(f"vcgencmd {' '.join(args)}", (text.strip().splitlines() or [""])[0]) from None


def read_model(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """Board model from the device tree ('Raspberry Pi 4 Model B Rev 1.4'); None when absent."""
    try:
        return path.read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


class VcgencmdProbe(PollingProbe):
    """Polls vcgencmd (three short calls per reading; ~10 ms of CPU, hence the default 0.5 s interval)."""

    name = "vcgencmd"

    def __init__(self, model_path: Path = DEVICE_TREE_MODEL) -> None:
        super().__init__()
        self.info = {"model": read_model(model_path)}

    def read(self) -> Reading:
        return {
            "throttled": float(_vcgencmd(["get_throttled"], parse_throttled)),
            "soc_temp_c": _vcgencmd(["measure_temp"], parse_temp),
            "arm_freq_mhz": _vcgencmd(["measure_clock", "arm"], parse_clock_mhz),
        }

    def extra_summary(self) -> dict[str, Any]:
        """Throttle state over the window: bits seen at any sample, and occurred-bits that appeared during it."""
        values = [int(r["throttled"]) for _, r in self.samples if "throttled" in r]
        if not values:
            return {}
        seen = 0
        for v in values:
            seen |= v
        new_occurred = (seen & ~values[0]) & OCCURRED_MASK
        return {
            "throttled_any": hex(seen),
            "throttled_flags": decode_throttled(seen),
            "throttled_now_during_window": bool(seen & NOW_MASK),
            "throttled_new_during_window": decode_throttled(new_occurred),
            "throttled_changed": len(set(values)) > 1,
        }



class PmicProbe(PollingProbe):
    """Raspberry Pi 5 power from its PMIC's ADC (`vcgencmd pmic_read_adc`): the sum of V x I over the rails the
    PMIC generates. That is the SoC, memory and on-board rails, not the board's input: USB and PCIe peripherals
    fed from 5 V and the PMIC's own conversion loss are not in it, so it is a lower bound of wall power (an INA2xx
    on the 5 V input, read by the hwmon probe, measures the whole board and is preferred when present). No
    correction factor is applied: community fits of one (about x1.15 + 0.6 W) are not published by the vendor."""

    name = "pi5-pmic"
    power_fields = ("pmic_rails_mw",)

    def read(self) -> Reading:
        rails = pmic_rails_mw(_vcgencmd(["pmic_read_adc"], parse_pmic_read_adc))
        if not rails:
            raise unparseable("vcgencmd pmic_read_adc", "no rail with both current and voltage")
        reading: Reading = {f"pmic_{rail.lower()}_mw": mw for rail, mw in rails.items()}
        reading["pmic_rails_mw"] = float(sum(rails.values()))
        return reading
