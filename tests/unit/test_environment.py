"""Environment fingerprint: real /proc and git where present, tmp files/repos for the other boards and states."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import environment as env

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_fingerprint_shape_and_json():
    fp = env.fingerprint()
    json.dumps(fp)
    assert fp["runtimes"]["numpy"] == np.__version__
    assert fp["python"]["version"].count(".") == 2
    assert fp["cpu"]["cores_logical"] >= 1
    assert fp["memory_total_mb"] > 0
    assert fp["hostname_sha256"] != socket.gethostname() and len(fp["hostname_sha256"]) == 16
    providers = fp["onnxruntime_providers"]
    assert providers == env.NOT_INSTALLED or "CPUExecutionProvider" in providers


def test_runtime_versions_not_installed():
    assert env.runtime_versions(("surely-not-a-real-dist-xyz",)) == {"surely-not-a-real-dist-xyz": "not installed"}


@pytest.mark.skipif(not env.CPUINFO.exists(), reason="needs /proc/cpuinfo")
def test_cpuinfo_this_machine():
    info = env.cpu_info()
    assert info["model"] != env.UNKNOWN
    assert isinstance(info["flags"], list) and info["flags"] == sorted(info["flags"])


def test_cpuinfo_arm_layout():
    assert env.parse_cpuinfo(PI4_CPUINFO) == {"model": "Raspberry Pi 4 Model B Rev 1.4",
                                              "flags": ["asimd", "cpuid", "crc32", "evtstrm", "fp"]}


def test_cpuinfo_unreadable_falls_back(tmp_path):
    info = env.cpu_info(tmp_path / "missing")
    assert info["flags"] == env.UNKNOWN and info["model"]  # platform.processor() or "unknown"


def test_device_info_jetson_and_missing(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Nano Developer Kit\x00")
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19\n"
                       "INSTALL_TYPE=\n")
    assert env.device_info(model, release) == {
        "model": "NVIDIA Jetson Nano Developer Kit",
        "l4t_release": "R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19"}
    assert env.device_info(tmp_path / "no", tmp_path / "no") == {"model": "unknown", "l4t_release": "unknown"}


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@needs_git
def test_git_commit_and_dirty(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "c")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert env.git_info(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert env.git_info(tmp_path) == {"commit": head, "dirty": True}


@needs_git
def test_git_not_a_repo_or_no_commit(tmp_path):
    assert env.git_info(tmp_path) == {"commit": "unknown", "dirty": "unknown"}
    _git(tmp_path, "init", "-q")  # a repo with no commit yet has no HEAD
    assert env.git_info(tmp_path) == {"commit": "unknown", "dirty": "unknown"}


def test_git_missing_never_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert env.fingerprint()["git"] == {"commit": "unknown", "dirty": "unknown"}


def test_serial_is_hashed_and_unknown_without_a_device_tree(tmp_path):
    serial = tmp_path / "serial-number"
    serial.write_bytes(b"10000000a1b2c3d4\x00")  # the device tree's NUL-terminated string, as on a Raspberry Pi
    h = env.serial_hash(serial)
    assert len(h) == 16 and "a1b2c3d4" not in h and h == env.serial_hash(serial)
    assert env.serial_hash(tmp_path / "none") == env.UNKNOWN
    assert "serial_sha256" in env.fingerprint()
