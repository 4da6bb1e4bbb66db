"""A board's fan state from sysfs, where the kernel exposes it (issue 21: "fan state where readable").

Two places, both read-only and both optional:

- hwmon (Documentation/hwmon/sysfs-interface.rst): any device with `fan<N>_input` (RPM) and, beside it, `pwm<N>`
  (duty 0-255). The Raspberry Pi 5's fan header is driven by the kernel's pwm-fan driver, whose hwmon device is
  named `pwmfan` (drivers/hwmon/pwm-fan.c, at /sys/devices/platform/cooling_fan/hwmon/hwmon*/ with the tachometer
  as `fan1_input`); a GPIO fan (drivers/hwmon/gpio-fan.c, the Pi 4 case fan's `gpio-fan` overlay) is `gpio_fan`,
  its `fan1_input` the RPM of the current speed step.
- the thermal framework's cooling devices (Documentation/driver-api/thermal/sysfs-api.rst):
  /sys/class/thermal/cooling_device<N>/{type,cur_state,max_state}. pwm-fan registers type `pwm-fan` (a Pi 5: states
  0-4, the firmware's 50/60/67.5/75 C steps), gpio-fan type `gpio-fan`. Other cooling devices (cpufreq, devfreq)
  throttle clocks and are not fans; they are not read here.

A board with neither (a Pi 4 without a fan, an x86 host, the emulated board) records `readable: false` with the reason
"not readable on this board". BENCH_HWMON_ROOT and BENCH_THERMAL_ROOT point the reader at a recorded or fake tree, as
for the hwmon and psutil probes. Standard library only: the worker runs this on the board (Python 3.8).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

HWMON_ROOT = Path("/sys/class/hwmon")
THERMAL_ROOT = Path("/sys/class/thermal")
HWMON_ROOT_ENV, THERMAL_ROOT_ENV = "BENCH_HWMON_ROOT", "BENCH_THERMAL_ROOT"
FAN_COOLING_TYPES = ("pwm-fan", "gpio-fan")
NOT_READABLE = "not readable on this board"
MAX_FANS = 8  # what a record may hold: a board has one or two fans
_FAN_INPUT = re.compile(r"^fan(\d{1,2})_input$")
_NUMBERED = re.compile(r"^(?:hwmon|cooling_device)(\d{1,4})$")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:
        return None


def _int(path: Path) -> Optional[int]:
    text = _read(path)
    return int(text) if text is not None and text.isdigit() else None


def _numbered(root: Path, prefix: str) -> List[Path]:
    """root/<prefix>N entries in numeric order (hwmon2 before hwmon10)."""
    try:
        found = [p for p in root.iterdir() if p.name.startswith(prefix) and _NUMBERED.match(p.name)]
    except OSError:
        return []
    return sorted(found, key=lambda p: int(_NUMBERED.match(p.name).group(1)))  # type: ignore[union-attr]


def hwmon_fans(root: Path) -> List[Dict[str, Any]]:
    """[{source: hwmon, device, fan, rpm, pwm_pct?}] for every readable `fan<N>_input` under root/hwmon*."""
    out: List[Dict[str, Any]] = []
    for dev in _numbered(root, "hwmon"):
        try:
            inputs = sorted((int(m.group(1)), p) for p in dev.iterdir() if (m := _FAN_INPUT.match(p.name)))
        except OSError:
            continue
        for n, path in inputs:
            rpm = _int(path)
            if rpm is None:
                continue
            fan: Dict[str, Any] = {"source": "hwmon", "device": _read(dev / "name") or dev.name, "fan": f"fan{n}",
                                   "rpm": rpm}
            pwm = _int(dev / f"pwm{n}")
            if pwm is not None and pwm <= 255:
                fan["pwm_pct"] = pwm * 100.0 / 255.0
            out.append(fan)
    return out


def cooling_fans(root: Path) -> List[Dict[str, Any]]:
    """[{source: cooling_device, device: its type, state, max_state}] for every fan cooling device under root."""
    out: List[Dict[str, Any]] = []
    for dev in _numbered(root, "cooling_device"):
        kind = _read(dev / "type")
        if kind not in FAN_COOLING_TYPES:
            continue
        state, top = _int(dev / "cur_state"), _int(dev / "max_state")
        if state is not None:
            out.append({"source": "cooling_device", "device": kind, "state": state, "max_state": top})
    return out


def fan_state(hwmon_root: Optional[Path] = None, thermal_root: Optional[Path] = None) -> Dict[str, Any]:
    """{readable: True, fans: [...]} or {readable: False, reason: "not readable on this board"}."""
    hw = Path(hwmon_root or os.environ.get(HWMON_ROOT_ENV) or HWMON_ROOT)
    th = Path(thermal_root or os.environ.get(THERMAL_ROOT_ENV) or THERMAL_ROOT)
    fans = (hwmon_fans(hw) + cooling_fans(th))[:MAX_FANS]
    if not fans:
        return {"readable": False, "reason": NOT_READABLE}
    return {"readable": True, "fans": fans}


def clean(value: Any) -> Optional[Dict[str, Any]]:
    """A fan record as a board sent it, kept only where well-formed (known fields; a device name that is a plain
    identifier; whole numbers in range); None when it is not a record at all."""
    if not isinstance(value, dict) or not isinstance(value.get("readable"), bool):
        return None
    if not value["readable"]:
        return {"readable": False, "reason": NOT_READABLE}
    ident = re.compile(r"[A-Za-z0-9_.-]{1,64}")

    def whole(v: Any, top: float) -> Optional[int]:
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top else None

    fans = []
    for raw in value.get("fans") if isinstance(value.get("fans"), list) else []:
        if not isinstance(raw, dict) or raw.get("source") not in ("hwmon", "cooling_device") \
                or not isinstance(raw.get("device"), str) or not ident.fullmatch(raw["device"]):
            continue
        fan: Dict[str, Any] = {"source": raw["source"], "device": raw["device"]}
        if raw["source"] == "hwmon":
            fan["fan"] = raw.get("fan") if isinstance(raw.get("fan"), str) and re.fullmatch(r"fan\d{1,2}",
                                                                                             raw["fan"]) else None
            fan["rpm"] = whole(raw.get("rpm"), 100_000)
            pct = raw.get("pwm_pct")
            if isinstance(pct, (int, float)) and not isinstance(pct, bool) and 0 <= pct <= 100:
                fan["pwm_pct"] = float(pct)
        else:
            fan["state"], fan["max_state"] = whole(raw.get("state"), 1000), whole(raw.get("max_state"), 1000)
        fans.append(fan)
        if len(fans) == MAX_FANS:
            break
    return {"readable": True, "fans": fans} if fans else {"readable": False, "reason": NOT_READABLE}


def describe(value: Any) -> str:
    """One short text for a report cell: "pwmfan fan1 3054 rpm (45%); pwm-fan state 2/4", or the reason."""
    if not isinstance(value, dict) or not value.get("readable"):
        return NOT_READABLE
    parts = []
    for f in value.get("fans") or []:
        if f.get("source") == "hwmon":
            text = f"{f.get('device')} {f.get('fan') or 'fan'} {f.get('rpm') if f.get('rpm') is not None else '-'} rpm"
            if f.get("pwm_pct") is not None:
                text += f" ({f['pwm_pct']:.0f}% PWM)"
        else:
            top = f.get("max_state")
            text = f"{f.get('device')} state {f.get('state')}" + (f"/{top}" if top is not None else "")
        parts.append(text)
    return "; ".join(parts) or NOT_READABLE
