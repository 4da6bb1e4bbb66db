"""`python -m harness.device.health PROFILE_JSON`: a board's health report, run on the board before any work.

The host (harness/launchers/ssh.py) sends the target profile as JSON (its [board] table, backends, telemetry and
the board's work folder) and reads one JSON object back:
- `available`, `reason`, `backends` in the shape of harness.targets.target_status, computed HERE, on the board,
  with the same functions (board_matches, backend_availability): a profile's board check is about the board;
- versions (python, harness, job schema, runtimes via the device fingerprint), board model and ISA, and the board's
  int8 kernel path (`kernel_path`, harness/kernel_path.py: the CPU features that select int8/fp16 kernels);
- free disk under the work folder, available memory (psutil's `available`: what the board's own gallery-size check
  reads, so the host can refuse a `--search-sizes` gallery before any work; harness/search_fit.py), temperature (/sys/class/thermal), throttle state (`vcgencmd get_throttled`,
  Raspberry Pi firmware) and whether tegrastats exists (Jetson);
- `problems`: what must stop the run (disk nearly full, under-voltage or throttling right now);
- `emulation`: on an emulated board (harness/launchers/arm64_exec.py sets harness.environment.EMULATION_ENV), its
  block (qemu-user version, emulated core, rootfs); the profile's [board] check is then passed as THAT board, never
  as the real one: device_model says "emulated (qemu-user X, -cpu CORE)" and the host marks every timing INVALID.
Imports only what the device worker imports (numpy, psutil, harness modules that import only those).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

MIN_FREE_MB = 200          # less than this under the work folder: packs, inputs and outputs may not fit
THERMAL_ZONES = Path("/sys/class/thermal")
# `vcgencmd get_throttled` bits that describe the present (Raspberry Pi firmware documentation, "get_throttled").
THROTTLE_NOW = {0x1: "under-voltage", 0x2: "ARM frequency capped", 0x4: "throttled", 0x8: "soft temperature limit"}


def temperature_c() -> float | None:
    temps = []
    for zone in sorted(THERMAL_ZONES.glob("thermal_zone*/temp")):
        try:
            temps.append(int(zone.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return max(temps) if temps else None


def throttled() -> dict | None:
    """{"raw": "0x50000", "now": [...]} from vcgencmd, or None where there is no vcgencmd."""
    if shutil.which("vcgencmd") is None:
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
        raw = out.strip().split("=", 1)[1]
        value = int(raw, 16)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return {"raw": None, "now": [], "error": "vcgencmd get_throttled gave no value"}
    return {"raw": raw, "now": [name for bit, name in THROTTLE_NOW.items() if value & bit]}


def report(profile: dict) -> dict:
    from harness import __version__
    from harness.environment import emulation, fingerprint
    from harness.jobs import SCHEMA_VERSION
    from harness.runners import backend_availability
    from harness.specs import Backend
    from harness.targets import _device_model, board_matches

    backends, reasons = [], []
    for b in profile.get("backends", []):
        backend = Backend(runtime=b["runtime"], variants=tuple(b.get("variants", ())), provider=b.get("provider"),
                          delegate=b.get("delegate"), delegate_library=b.get("delegate_library"))
        ok, why = backend_availability(backend)
        backends.append({"runtime": backend.runtime, "requested": backend.requested, "variants": list(backend.variants),
                         "available": ok, "reason": why})
        if not ok:
            reasons.append(f"{backend.runtime}/{backend.requested}: {why}")
    board = profile.get("board") or {}
    emulated = emulation()
    device_ok = board_matches(board) or emulated is not None  # an emulated board passes only as one (below)
    if not device_ok:
        reasons.insert(0, f"this board is not a {board.get('name', 'board of this profile')} "
                          f"(device model: {_device_model() or 'unknown'}, {platform.machine()})")
    fp = fingerprint()
    work = Path.home() / profile.get("workdir", ".cache/edge-fair-bench")
    problems = []
    try:
        work.mkdir(parents=True, exist_ok=True)
        free_mb = shutil.disk_usage(work).free / 2**20
    except OSError as exc:
        free_mb = None
        problems.append(f"work folder {work}: {exc.strerror}")
    if free_mb is not None and free_mb < MIN_FREE_MB:
        problems.append(f"only {free_mb:.0f} MB free under {work} (need {MIN_FREE_MB} MB)")
    try:
        import psutil

        available_mb = round(psutil.virtual_memory().available / 2**20)
    except Exception:  # noqa: BLE001 - a board whose /proc/meminfo psutil cannot read: unknown, not a failed check
        available_mb = None
    throttle = throttled()
    if throttle and throttle["now"]:
        problems.append(f"the board reports {', '.join(throttle['now'])} now (vcgencmd get_throttled="
                        f"{throttle['raw']})")
    return {"available": device_ok and any(b["available"] for b in backends), "reason": "; ".join(reasons) or None,
            "backends": backends, "problems": problems, "job_schema_version": SCHEMA_VERSION,
            "harness_version": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "device_model": (f"emulated ({emulated.get('by')}, -cpu {emulated.get('cpu')})" if emulated
                             else _device_model() or None), "emulation": emulated, "disk_free_mb": None if free_mb is None else round(free_mb),
            "memory_available_mb": available_mb,
            "temperature_c": temperature_c(), "throttled": throttle,
            "tegrastats": shutil.which("tegrastats") is not None, "fingerprint": fp,
            "kernel_path": fp.get("kernel_path")}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.device.health PROFILE_JSON", file=sys.stderr)
        return 2
    try:
        profile = json.loads(argv[0])
    except json.JSONDecodeError as exc:
        print(f"harness.device.health: the profile is not JSON: {exc}", file=sys.stderr)
        return 2
    json.dump(report(profile), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main(sys.argv[1:]))
