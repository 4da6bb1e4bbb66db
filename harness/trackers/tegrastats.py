"""NVIDIA Jetson telemetry: tegrastats lines, nvpmodel -q, jetson_clocks --show.

tegrastats formats differ by JetPack release, so the parser looks for each field by pattern, not by position:
- JetPack 4.x (Nano, TX2, Xavier NX on L4T 32.x): no timestamp, rails as cur/avg in mW without a unit
  ("POM_5V_IN 2459/2459", "VDD_IN 4126/4126"), temperatures "CPU@36C", GPU freq "GR3D_FREQ 0%@921".
- JetPack 5/6 (L4T 35/36: Xavier, Orin): a leading "MM-DD-YYYY HH:MM:SS" timestamp, rails with units
  ("VDD_IN 4123mW/4123mW"), GPU freq in brackets per GPC ("GR3D_FREQ 0%@[305]", AGX Orin "0%@[0,0]"),
  lower-case sensor names on Orin ("cpu@41.25C", "tj@41.25C").
Sensor values of -256C mean "sensor powered off" and PMIC@100C/50C is a fixed placeholder, so both are dropped:
they would otherwise trip the temperature limit in trackers.validity.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import Any

from harness.errors import UnavailableError
from harness.trackers.probe import Probe, Reading, require_tool, run_tool, unparseable

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"(\d+)%(?:@(\d+))?")
_ENGINE = re.compile(r"\b(EMC|GR3D)_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_ENGINE_NAMES = {"EMC": "emc", "GR3D": "gpu"}
_PLACEHOLDER_SENSORS = {"pmic"}
_SENSOR_OFF_C = -200.0

TOTAL_POWER_FIELDS = ("vdd_in_mw", "pom_5v_in_mw")  # board input: Xavier/Orin, then Nano/TX1


def parse_line(line: str) -> Reading:
    """One tegrastats line -> reading. Raises ValueError for a line that is not tegrastats output."""
    ram = _RAM.search(line)
    if ram is None:
        raise ValueError(f"not a tegrastats line (no RAM field): {line.strip()!r}")
    r: Reading = {"ram_used_mb": float(ram.group(1)), "ram_total_mb": float(ram.group(2))}
    if swap := _SWAP.search(line):
        r["swap_used_mb"] = float(swap.group(1))
    if cpu := _CPU.search(line):
        cores = [_CORE.fullmatch(c.strip()) for c in cpu.group(1).split(",") if c.strip() != "off"]
        cores = [c for c in cores if c is not None]
        r["cpu_cores_online"] = float(len(cores))
        if cores:
            r["cpu_util_pct"] = sum(float(c.group(1)) for c in cores) / len(cores)
            freqs = [float(c.group(2)) for c in cores if c.group(2)]
            if freqs:
                r["cpu_freq_mhz"] = max(freqs)  # cores share a cluster clock; max is the cluster frequency
    for m in _ENGINE.finditer(line):
        key = _ENGINE_NAMES[m.group(1)]
        r[f"{key}_util_pct"] = float(m.group(2))
        if m.group(3):
            r[f"{key}_freq_mhz"] = max(float(f) for f in m.group(3).split(",") if f)
    for m in _TEMP.finditer(line):
        name, value = m.group(1).lower(), float(m.group(2))
        if name not in _PLACEHOLDER_SENSORS and value > _SENSOR_OFF_C:
            r[f"{name}_temp_c"] = value
    for m in _RAIL.finditer(line):
        if m.group(1) not in ("RAM", "SWAP"):
            r[f"{m.group(1).lower()}_mw"] = float(m.group(2))  # instantaneous; group(3) is tegrastats' running mean
    return r


def parse_nvpmodel(text: str) -> dict[str, Any]:
    """`nvpmodel -q` -> {"power_mode": "MAXN", "power_mode_id": 0}. Raises ValueError if no mode line."""
    m = re.search(r"NV Power Mode:\s*(.+)", text)
    if m is None:
        raise ValueError(f"no 'NV Power Mode' line in: {text.strip().splitlines()[:1]!r}")
    out: dict[str, Any] = {"power_mode": m.group(1).strip()}
    rest = text[m.end():].split()
    if rest and rest[0].isdigit():
        out["power_mode_id"] = int(rest[0])
    return out


def parse_jetson_clocks(text: str) -> dict[str, Any]:
    """`jetson_clocks --show` -> per-clock min/max/current MHz and whether every clock is pinned (min == max).

    jetson_clocks pins CPU and GPU clocks by raising the minimum to the maximum and EMC by a frequency override,
    so "clocks locked" (all pinned) means the run is not subject to DVFS ramp-up.
    """
    clocks: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = re.match(r"\s*(cpu\d+|GPU|EMC)\b[: ](.*)", line)
        if m is None:
            continue
        kv = dict(re.findall(r"(\w+)=(\S+)", m.group(2)))
        if kv.get("Online") == "0" or "MaxFreq" not in kv:
            continue
        # cpu values are kHz, GPU/EMC values are Hz
        scale = 1e3 if m.group(1).startswith("cpu") else 1e6
        clock: dict[str, Any] = {
            k: float(kv[src]) / scale
            for k, src in (("min_mhz", "MinFreq"), ("max_mhz", "MaxFreq"), ("cur_mhz", "CurrentFreq")) if src in kv
        }
        # EMC is pinned through an override (FreqOverride=1, current at max), not by raising its minimum.
        clock["locked"] = clock.get("min_mhz") == clock.get("max_mhz") or (
            kv.get("FreqOverride") == "1" and clock.get("cur_mhz") == clock.get("max_mhz"))
        clocks[m.group(1).lower()] = clock
    if not clocks:
        raise ValueError(f"no clock lines in: {text.strip().splitlines()[:1]!r}")
    return {"clocks_locked": all(c["locked"] for c in clocks.values()), "clocks": clocks}


class TegrastatsProbe(Probe):
    """Streams `tegrastats --interval <ms>` from a child process; one reading per line."""

    name = "tegrastats"
    power_fields = TOTAL_POWER_FIELDS

    def __init__(self, first_line_timeout_s: float = 3.0) -> None:
        super().__init__()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._first = threading.Event()
        self._first_line_timeout_s = first_line_timeout_s

    def start(self, interval_s: float) -> None:
        exe = require_tool("tegrastats")
        self.info = _jetson_info()
        interval_ms = max(1, round(interval_s * 1000))
        try:
            self._proc = subprocess.Popen(
                [exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        except OSError as exc:
            raise UnavailableError(f"tegrastats: could not run: {exc}") from None
        self._reader = threading.Thread(target=self._read_lines, name="probe-tegrastats", daemon=True)
        self._reader.start()
        # Wait for the first line so the window has a reading at its start (tegrastats prints one at launch).
        if not self._first.wait(interval_s + self._first_line_timeout_s) and not self.samples:
            self.stop()
            raise UnavailableError(f"tegrastats printed nothing within {interval_s + self._first_line_timeout_s:g} s")
        if self.reason and not self.samples:
            self.stop()
            raise UnavailableError(self.reason)

    def _read_lines(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if not line.strip():
                continue
            try:
                reading = parse_line(line)
            except ValueError:
                self.reason = unparseable("tegrastats", line).message
                self._first.set()
                return
            self.samples.append((time.perf_counter(), reading))
            self._first.set()
        if not self.samples and self.reason is None and self._proc.stderr is not None:
            err = self._proc.stderr.read().strip().splitlines()
            self.reason = f"tegrastats exited: {err[0] if err else '(no output)'}"
        self._first.set()

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._proc is not None:
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()
        self._proc, self._reader = None, None


def _jetson_info() -> dict[str, Any]:
    """Power mode and clock state, each optional: absent tools or non-root failures are recorded, not raised."""
    info: dict[str, Any] = {}
    for key, argv, parse in (
        ("nvpmodel", ["nvpmodel", "-q"], parse_nvpmodel),
        ("jetson_clocks", ["jetson_clocks", "--show"], parse_jetson_clocks),
    ):
        try:
            info[key] = parse(run_tool(argv))
        except UnavailableError as exc:
            info[key] = {"available": False, "reason": exc.message}
        except ValueError as exc:
            info[key] = {"available": False, "reason": f"{argv[0]}: unparseable output: {exc}"}
    return info
