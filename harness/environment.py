"""Machine fingerprint stored in run.json "environment": enough to tell whether two runs are comparable.

The CPU's int8/fp16 kernel path (instruction-set features and the int8 kernels onnxruntime's MLAS picks from them,
harness/kernel_path.py) is part of it: two CPUs of one ISA can give one int8 pack different outputs.
Every field degrades to "unknown" (or "not installed" for runtimes): a fingerprint must never stop a run.
The hostname is hashed so results can be shared without naming the machine, yet runs from one host still group.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

import psutil

from harness import runtimes

UNKNOWN = "unknown"
NOT_INSTALLED = "not installed"
# Every registered runtime's distributions (harness/runtimes.py; onnxruntime and onnxruntime-gpu both, so a run says
# which wheel actually provided the runtime), then the libraries the figures depend on.
DEFAULT_RUNTIMES = (*runtimes.fingerprint_packages(), "numpy", "opencv-python-headless")
REPO_DIR = Path(__file__).resolve().parents[1]
CPUINFO = Path("/proc/cpuinfo")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
# The board's serial number (Raspberry Pi, Jetson: the device tree; x86 boards have none readable without root).
DEVICE_TREE_SERIAL = Path("/proc/device-tree/serial-number")
NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
OS_RELEASE = Path("/etc/os-release")
_GIT_TIMEOUT_S = 5.0
# Set (to the board's emulation block, JSON) by the emulated board's python behind SSH (harness/launchers/arm64_exec.py).
EMULATION_ENV = "BENCH_EMULATION"


def _safe(fn: Callable[[], Any]) -> Any:
    """fn() or "unknown" on any failure (fingerprinting is best-effort by contract)."""
    try:
        value = fn()
    except Exception:  # noqa: BLE001 - deliberate: a fingerprint field must never raise
        return UNKNOWN
    return UNKNOWN if value is None or value == "" else value


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model and feature flags from /proc/cpuinfo text, x86 ('model name', 'flags') or ARM ('Model'/'Hardware',
    'CPU part', 'Features'). Missing keys are left out."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    out: dict[str, Any] = {}
    for key in ("model name", "Model", "Hardware", "Processor"):
        if fields.get(key):
            out["model"] = fields[key]
            break
    flags = fields.get("flags") or fields.get("Features")
    if flags:
        out["flags"] = sorted(flags.split())
    return out


def cpu_info(path: Path = CPUINFO) -> dict[str, Any]:
    parsed = _safe(lambda: parse_cpuinfo(path.read_text()))
    parsed = parsed if isinstance(parsed, dict) else {}
    return {
        "model": parsed.get("model") or _safe(platform.processor),
        "arch": _safe(platform.machine),
        "flags": parsed.get("flags", UNKNOWN),
        "cores_logical": _safe(lambda: psutil.cpu_count(logical=True)),
        "cores_physical": _safe(lambda: psutil.cpu_count(logical=False)),
        "cores_allowed": _safe(lambda: len(os.sched_getaffinity(0))),  # taskset/cgroup pinning, Linux only
    }


def runtime_versions(names: tuple[str, ...] = DEFAULT_RUNTIMES) -> dict[str, str]:
    """Distribution versions via importlib.metadata (no import, so a broken runtime cannot crash this)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = NOT_INSTALLED
        except Exception:  # noqa: BLE001 - corrupt metadata must not stop the run
            out[name] = UNKNOWN
    return out


def onnxruntime_providers() -> list[str] | str:
    def providers() -> list[str]:
        from harness.interrupts import held

        with held():  # imported lazily: heavy, absent on a LiteRT-only board; held: harness/interrupts.py
            import onnxruntime

        return list(onnxruntime.get_available_providers())

    try:
        return providers()
    except ImportError:
        return NOT_INSTALLED
    except Exception:  # noqa: BLE001
        return UNKNOWN


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def device_info(model_path: Path = DEVICE_TREE_MODEL, tegra_path: Path = NV_TEGRA_RELEASE) -> dict[str, str]:
    """Board model (Raspberry Pi / Jetson device tree) and the L4T release line on Jetson."""
    tegra = _read_text(tegra_path)
    return {
        "model": _read_text(model_path) or UNKNOWN,
        "l4t_release": tegra.splitlines()[0].lstrip("# ").strip() if tegra else UNKNOWN,
    }


def os_info(os_release: Path = OS_RELEASE) -> dict[str, str]:
    def pretty_name() -> str | None:
        for line in (_read_text(os_release) or "").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
        return None

    return {
        "system": _safe(platform.system),
        "distribution": _safe(pretty_name),
        "kernel": _safe(platform.release),
    }


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=True,
    )
    return done.stdout


def git_info(repo: Path = REPO_DIR) -> dict[str, Any]:
    """Commit and dirty flag of the harness checkout; "unknown" when not a repo, no commit yet, or git missing."""
    commit = _safe(lambda: _git(repo, "rev-parse", "HEAD").strip())
    if commit == UNKNOWN:
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    dirty = _safe(lambda: bool(_git(repo, "status", "--porcelain").strip()))
    return {"commit": commit, "dirty": dirty}


def hostname_hash() -> str:
    return _safe(lambda: hashlib.sha256(socket.gethostname().encode()).hexdigest()[:16])


def serial_hash(path: Path = DEVICE_TREE_SERIAL) -> str:
    """sha256 (16 hex) of the board's serial number, hashed like the hostname: it tells one physical board from
    another of the same model (per-board gate baselines, harness/report/board.py) without publishing the serial."""
    serial = _read_text(path)
    return hashlib.sha256(serial.encode()).hexdigest()[:16] if serial else UNKNOWN


def emulation() -> dict[str, Any] | None:
    """The emulation block this process runs under (EMULATION_ENV), or None on real hardware. A value that is not a
    JSON object still says "emulated": an emulated board must never pass for a real one."""
    import json

    text = os.environ.get(EMULATION_ENV)
    if not text:
        return None
    try:
        block = json.loads(text)
    except json.JSONDecodeError:
        block = None
    return block if isinstance(block, dict) else {"emulated": True, "by": UNKNOWN, "cpu": UNKNOWN}


def kernel_path_info(cpu: dict[str, Any]) -> dict[str, Any]:
    """The CPU's int8/fp16 kernel path (harness/kernel_path.py) from this fingerprint's cpu block."""
    from harness.kernel_path import UNKNOWN as KP_UNKNOWN, kernel_path

    block = _safe(lambda: kernel_path(cpu.get("flags"), str(cpu.get("arch") or UNKNOWN)))
    return block if isinstance(block, dict) else {"int8": KP_UNKNOWN}


def fingerprint(*, runtimes: tuple[str, ...] = DEFAULT_RUNTIMES, repo: Path = REPO_DIR) -> dict[str, Any]:
    """The run.json "environment" block. Never raises; unreadable facts are "unknown"."""
    cpu = cpu_info()
    doc = {
        "cpu": cpu,
        "kernel_path": kernel_path_info(cpu),
        "memory_total_mb": _safe(lambda: round(psutil.virtual_memory().total / (1 << 20))),
        "os": os_info(),
        "python": {"version": _safe(platform.python_version), "implementation": _safe(platform.python_implementation)},
        "runtimes": runtime_versions(runtimes),
        "onnxruntime_providers": onnxruntime_providers(),
        "device": device_info(),
        "git": git_info(repo),
        "hostname_sha256": hostname_hash(),
        "serial_sha256": serial_hash(),
    }
    emu = emulation()
    if emu:
        doc["emulation"] = emu
    return doc  # no `dict | dict`: the device side runs on Python 3.8 (JetPack 5)
