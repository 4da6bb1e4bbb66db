"""The emulated board behind SSH without root or qemu: the command arm64_exec runs, its shim, and what the board
reports about itself (harness.environment.EMULATION_ENV read by the fingerprint and the health check). The real
thing runs in tests/remote/test_emulated_pool.py."""

from __future__ import annotations

import json
import shlex
import subprocess

from harness import specs
from harness.device.health import report
from harness.environment import EMULATION_ENV, emulation, fingerprint
from harness.launchers.arm64_board import SRC, Arm64Board
from harness.launchers.arm64_exec import board_argv, main, write_shim
from harness.launchers.ssh import Board, SSHLauncher
from harness.paths import REPO_ROOT

EMU = {"emulated": True, "by": "qemu-user 7.2", "cpu": "cortex-a72", "board": "Raspberry Pi 4", "rootfs": "k"}


def _ready_board(tmp_path) -> Arm64Board:
    board = Arm64Board(tmp_path / "cache")
    board.home.mkdir(parents=True)
    (board.home / "READY").write_text(board.key)
    return board


def _rpi_profile(workdir) -> dict:
    t = specs.get_target("rpi")
    return {"board": dict(t.board), "telemetry": [], "backends": [], "workdir": str(workdir)}


def test_work_folder_is_bound_at_its_own_path_and_the_cwd_kept(tmp_path, monkeypatch):
    board, work = _ready_board(tmp_path), tmp_path / "work"
    monkeypatch.setattr("harness.launchers.arm64_board.qemu_version", lambda: "7.2")
    job_in = work / "jobs" / "e-1" / "in"
    job_in.mkdir(parents=True)
    cmd = board_argv(board, work, ["-m", "harness", "worker", "job.json"], job_in)
    script = cmd[-1].splitlines()
    root = str(board.root)
    assert f"mkdir -p {root}{work}" in script and f"mount --bind {work} {root}{work}" in script  # read-write
    assert f"mount --bind -o ro {REPO_ROOT} {root}{SRC}" in script
    last = shlex.split(script[-1])
    assert last[-8:] == ["/usr/bin/env", "-C", str(job_in), "python3", "-m", "harness", "worker", "job.json"]
    env = dict(a.split("=", 1) for a in last if "=" in a and a.split("=", 1)[0].isupper())
    assert json.loads(env[EMULATION_ENV])["cpu"] == "cortex-a72" and env["HOME"]
    # A cwd outside the work folder (the ssh session's home) is not visible inside: the work folder is used.
    outside = board_argv(board, work, ["-V"], tmp_path)
    assert shlex.split(outside[-1].splitlines()[-1])[-4:] == ["-C", str(work), "python3", "-V"]


def test_exec_before_the_board_is_restored_is_one_line_and_exit_3(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("harness.launchers.arm64_exec.enable_binfmt", lambda: None)
    code = main(["exec", "--workdir", str(tmp_path / "w"), "--cache-dir", str(tmp_path / "c"), "--", "-V"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "not built or restored" in err


def test_shim_passes_every_argument_through(tmp_path):
    shim = write_shim(tmp_path / "py", workdir=tmp_path / "w", cpu="cortex-a76", cache=tmp_path / "c")
    text = shim.read_text()
    assert text.startswith("#!/bin/sh\n") and shim.stat().st_mode & 0o111
    line = shlex.split(text.splitlines()[-1])
    assert line[line.index("--cpu") + 1] == "cortex-a76" and line[-2:] == ["--", "$@"]
    assert subprocess.run(["sh", "-n", str(shim)]).returncode == 0


def test_emulation_env_is_in_the_fingerprint_only_when_set(monkeypatch):
    monkeypatch.delenv(EMULATION_ENV, raising=False)
    assert emulation() is None and "emulation" not in fingerprint()
    monkeypatch.setenv(EMULATION_ENV, json.dumps(EMU))
    assert fingerprint()["emulation"] == EMU
    monkeypatch.setenv(EMULATION_ENV, "garbage")  # still emulated, never a real board
    assert emulation() == {"emulated": True, "by": "unknown", "cpu": "unknown"}


def test_rpi_board_check_passes_only_as_the_emulated_board(tmp_path, monkeypatch):
    monkeypatch.delenv(EMULATION_ENV, raising=False)
    real = report(_rpi_profile(tmp_path))  # this x86 machine is no Raspberry Pi
    assert real["available"] is False and "is not a Raspberry Pi" in real["reason"] and real["emulation"] is None
    monkeypatch.setenv(EMULATION_ENV, json.dumps(EMU))
    emu = report(_rpi_profile(tmp_path) | {"backends": [{"runtime": "onnxruntime", "variants": ["onnx-int8"],
                                                         "provider": "CPUExecutionProvider"}]})
    assert emu["available"] is True and emu["emulation"] == EMU
    assert emu["device_model"] == "emulated (qemu-user 7.2, -cpu cortex-a72)"


def test_ssh_launcher_records_the_emulation_for_invalidate_timings():
    launcher = SSHLauncher(Board(name="b", host="127.0.0.1"))
    launcher.health_report = {"device_model": "emulated (qemu-user 7.2, -cpu cortex-a72)", "emulation": EMU}
    assert launcher.describe()["emulation"] == EMU
    launcher.health_report = {"device_model": "Raspberry Pi 4 Model B Rev 1.5"}
    assert "emulation" not in launcher.describe()
    launcher.close()
