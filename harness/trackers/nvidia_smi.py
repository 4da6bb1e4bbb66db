"""CUDA-target telemetry through nvidia-smi: GPU temperature, board power, SM clock, clock-throttle reasons."""

from __future__ import annotations

from typing import Any

from harness.trackers.probe import PollingProbe, Reading, run_tool, unparseable

QUERY = "name,temperature.gpu,power.draw,clocks.sm,clocks_throttle_reasons.active"
# nvmlClocksThrottleReasons bits (nvml.h). GPU-idle and application/display clock settings are not slowdowns;
# the power, thermal and hardware bits mean the GPU ran below its requested clock.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
SLOWDOWN_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
_MISSING = {"[N/A]", "[Not Supported]", "N/A", ""}


def decode_throttle_reasons(value: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if value & bit]


def parse_line(line: str) -> tuple[str, Reading]:
    """One `--format=csv,noheader,nounits` line of QUERY -> (gpu name, reading). ValueError if malformed.

    Fields a GPU does not support ("[N/A]", "[Not Supported]") are left out of the reading rather than zeroed.
    """
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 5:
        raise ValueError(f"expected 5 comma-separated fields, got {len(parts)}: {line.strip()!r}")
    name, temp, power, sm, reasons = parts
    r: Reading = {}
    for key, raw, convert in (
        ("gpu_temp_c", temp, float),
        ("gpu_power_mw", power, lambda s: float(s) * 1000.0),  # nvidia-smi reports W; energy works in mW
        ("sm_freq_mhz", sm, float),
        ("throttle_reasons", reasons, lambda s: float(int(s, 16))),
    ):
        if raw not in _MISSING:
            r[key] = convert(raw)
    return name, r


class NvidiaSmiProbe(PollingProbe):
    """Polls one GPU (index `gpu`) with a single nvidia-smi query per reading."""

    name = "nvidia-smi"
    power_fields = ("gpu_power_mw",)

    def __init__(self, gpu: int = 0) -> None:
        super().__init__()
        self.gpu = gpu
        self.info = {"gpu_index": gpu}

    def read(self) -> Reading:
        text = run_tool(["nvidia-smi", "-i", str(self.gpu), f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"])
        line = (text.strip().splitlines() or [""])[0]
        try:
            name, reading = parse_line(line)
        except ValueError:
            raise unparseable("nvidia-smi", line) from None
        self.info["name"] = name
        return reading

    def extra_summary(self) -> dict[str, Any]:
        seen = 0
        for _, r in self.samples:
            seen |= int(r.get("throttle_reasons", 0))
        return {
            "throttle_reasons_any": hex(seen),
            "throttle_flags": decode_throttle_reasons(seen),
            "throttled_now_during_window": bool(seen & SLOWDOWN_MASK),
        }
