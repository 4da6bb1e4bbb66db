"""CPU frequency governor and fan state from sysfs: whether a board was in a steady-state mode while it was timed.

Raspberry Pi OS boots with the `ondemand` governor (Debian's default is `schedutil`), which lowers clocks between
bursts: a single-stream loop then measures a mix of clock states. MLPerf Inference's rules ask for the system in
its documented steady state; for a Pi that is `performance` (`echo performance | sudo tee
/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor`). The probe records every core's governor and current clock,
and every hwmon fan's speed and PWM duty (harness/trackers/fan.py; the Pi 5's fan header is `pwmfan`). A governor
other than the expected ones makes the single-stream measurement INVALID with that reason (harness.trackers.validity
reads `invalid_reasons`); `cpufreq:allow=ondemand+schedutil` in a profile's telemetry list allows others.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from harness.errors import UnavailableError
from harness.trackers import fan
from harness.trackers.probe import PollingProbe, Reading

CPU_ROOT = Path("/sys/devices/system/cpu")
HWMON_ROOT = Path("/sys/class/hwmon")
CPU_ROOT_ENV = "BENCH_CPUFREQ_ROOT"
DEFAULT_ALLOWED = ("performance",)
_CPU = re.compile(r"^cpu(\d+)$")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def governors(root: Path) -> dict[str, str]:
    """{"cpu0": "ondemand", ...} for every core exposing cpufreq."""
    out: dict[str, str] = {}
    for cpu in sorted(root.glob("cpu*"), key=lambda p: int(m.group(1)) if (m := _CPU.match(p.name)) else -1):
        if _CPU.match(cpu.name) and (g := _read(cpu / "cpufreq" / "scaling_governor")):
            out[cpu.name] = g
    return out


class CpufreqProbe(PollingProbe):
    name = "cpufreq"

    def __init__(self, cpu_root: Path | None = None, hwmon_root: Path | None = None,
                 allow: tuple[str, ...] = DEFAULT_ALLOWED) -> None:
        super().__init__()
        self.cpu_root = Path(cpu_root or os.environ.get(CPU_ROOT_ENV) or CPU_ROOT)
        self.hwmon_root = Path(hwmon_root or os.environ.get("BENCH_HWMON_ROOT") or HWMON_ROOT)
        self.allow = tuple(allow)
        self._governors_seen: dict[str, set[str]] = {}

    def start(self, interval_s: float) -> None:
        if not governors(self.cpu_root):
            raise UnavailableError(f"no cpufreq governor exposed under {self.cpu_root}")
        self.info = {"allowed_governors": list(self.allow),
                     "fan": [f"{f['device']} {f['fan']}" for f in fan.hwmon_fans(self.hwmon_root)] or "no fan device"}
        super().start(interval_s)

    def read(self) -> Reading:
        gov = governors(self.cpu_root)
        if not gov:
            raise UnavailableError(f"cpufreq governors under {self.cpu_root} disappeared")
        for cpu, g in gov.items():
            self._governors_seen.setdefault(cpu, set()).add(g)
        r: Reading = {}
        for cpu in gov:
            khz = _read(self.cpu_root / cpu / "cpufreq" / "scaling_cur_freq")
            if khz and khz.isdigit():
                r[f"{cpu}_freq_mhz"] = int(khz) / 1000.0
        for i, f in enumerate(fan.hwmon_fans(self.hwmon_root)):  # any hwmon fan (harness/trackers/fan.py)
            r[f"fan{i}_rpm"] = float(f["rpm"])
            if "pwm_pct" in f:
                r[f"fan{i}_pwm_pct"] = f["pwm_pct"]
        return r

    def extra_summary(self) -> dict[str, Any]:
        seen = {cpu: sorted(g) for cpu, g in self._governors_seen.items()}
        bad = sorted({g for gs in seen.values() for g in gs} - set(self.allow))
        out: dict[str, Any] = {"governors": seen}
        if bad:
            out["invalid_reasons"] = [f"cpufreq: governor {', '.join(bad)} during the window (expected "
                                      f"{' or '.join(self.allow)}; set it, or allow it in the target profile)"]
        return out


def from_option(option: str | None) -> CpufreqProbe:
    """`cpufreq` or `cpufreq:allow=ondemand+schedutil` (a profile's telemetry entry)."""
    if not option:
        return CpufreqProbe()
    key, _, value = option.partition("=")
    if key != "allow" or not value:
        raise ValueError(f"cpufreq option {option!r}: expected allow=GOVERNOR[+GOVERNOR...]")
    return CpufreqProbe(allow=tuple(v for v in value.split("+") if v))
