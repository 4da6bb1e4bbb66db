"""A power meter on the HOST for a remote board (harness/launchers/host_meter.py), on the loopback sshd board
(tests/remote/lab.py): `meter = "labmeter ..."` in the inventory runs a fake meter command that is on the host's
PATH only, around the board's windows, its readings placed by the clock offset measured over SSH. A constant SCPI
reply gives 2500 mW and exactly 2500 mW x the board's window / its inferences; a bad reply leaves the energy null
with the one-line reason; the board-side meter (BENCH_METER_CMD in the board's environment) still works.
The windows are long enough (3 s timed, 2 s idle, a reading every 0.1 s) that a loaded CI host still gets several
readings in each and a clock uncertainty (loopback: well under 1 ms) far below 5% of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENTRY = "gender-dlib--onnx-fp32"
# A lab profile naming `meter` (the shipped ones do not): the cpu target's onnxruntime backend.
PROFILE = """id = "cpu-metered"
name = "CPU with an external meter"
telemetry = ["psutil", "meter"]

[[backends]]
runtime = "onnxruntime"
provider = "CPUExecutionProvider"
variants = ["onnx-fp32"]
threads = 0
"""
RUN = ["run", "--target", "cpu-metered", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset",
       "london-frl", "--threads", "1", "--min-count", "20", "--min-duration", "3", "--idle-s", "2",
       "--bootstrap", "50", "--no-build"]


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def metered(lab, tmp_path_factory):
    """(inventory, env): board-host (a host meter `labmeter` printing what host/reply.txt holds), board-own (the same
    sshd; its python a wrapper that puts BENCH_METER_CMD in the worker's environment: a meter on the board)."""
    root = tmp_path_factory.mktemp("metered")
    board = lab.add("board-m")
    host_bin = root / "host-bin"
    host_bin.mkdir()
    _script(host_bin / "labmeter", f"/bin/cat '{root / 'reply.txt'}'\n")
    board_meter = _script(root / "board-meter", "echo '1.25 W'\n")
    wrapper = _script(root / "board-python", f"BENCH_METER_CMD='{board_meter}' exec '{board.python}' \"$@\"\n")
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "cpu-metered.toml").write_text(PROFILE)
    base = lab.inventory.read_text().split("[boards.")[0]
    common = (f'address = "{board.user}@127.0.0.1:{board.port}"\nworkdir = "{board.workdir}"\n'
              'tags = { target = "cpu" }\n')
    inventory = root / "boards.toml"
    inventory.write_text(base + f'[boards.board-host]\n{common}python = "{board.python}"\n'
                         'meter = "labmeter --serial-device=/dev/rfcomm0 --password=hunter2 um25c"\n'
                         'meter_unit = "W"\nmeter_interval_s = 0.1\n\n'
                         f'[boards.board-own]\n{common}python = "{wrapper}"\n')
    env = {"PATH": f"{host_bin}:{os.environ['PATH']}", "BENCH_TARGETS_PATH": str(profiles)}
    return inventory, env, root


def bench(results: Path, cache: Path, data: Path, extra_env: dict, *args: str):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), BENCH_CACHE=str(cache), BENCH_RESULTS=str(results),
               BENCH_DATA=str(data), **extra_env)
    return subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _entry(stdout: str) -> tuple[dict, Path]:
    run_dir = Path(stdout.strip().splitlines()[-1])
    (entry,) = json.loads((run_dir / "run.json").read_text())["entries"]
    return entry, run_dir


def _inferences(run_dir: Path) -> int:
    return len(np.load(run_dir / "timings" / f"{ENTRY}.npy"))


def test_host_meter_gives_power_and_energy_on_the_boards_window(metered, built_packs, tiny_data, tmp_path):
    inventory, env, root = metered
    (root / "reply.txt").write_text("+2.50000000E+00\n")  # SCPI NR3 reply to MEAS:POW?: 2.5 W
    proc = bench(tmp_path, built_packs, tiny_data, env, *RUN, "--device", "board-host", "--inventory", str(inventory))
    assert proc.returncode == 0, proc.stderr
    entry, run_dir = _entry(proc.stdout)
    speed = entry["speed"]
    meter = speed["telemetry"]["meter"]
    info, power = meter["info"], meter["summary"]["power"]
    assert meter["available"] is True and info["runs_on"] == "host" and info["command"] == "labmeter"
    assert "hunter2" not in json.dumps(json.loads((run_dir / "run.json").read_text()))  # arguments never recorded
    assert info["readings"] > meter["summary"]["samples"] >= 2
    clock = info["clock"]
    assert clock["round_trip_s"] == pytest.approx(2 * (clock["uncertainty_s"] - clock["drift_s"]))
    assert 0 <= clock["uncertainty_s"] <= 0.05 * (info["board_windows"]["timed"][1] - info["board_windows"]["timed"][0])
    assert power["mean_mw"] == 2500.0 and power["readings"] >= 2
    timed = info["board_windows"]["timed"]
    n = _inferences(run_dir)
    assert info["inferences"] == n
    assert speed["energy_mj_per_inference"] == pytest.approx(2500.0 * (timed[1] - timed[0]) / n, rel=1e-9)
    assert power["idle_mw"] == 2500.0 and power["idle_readings"] >= 2  # --idle-s 2 at 0.1 s
    assert speed["device_state"]["idle"]["done"] is True


def test_a_bad_meter_reply_leaves_the_energy_null_with_the_reason(metered, built_packs, tiny_data, tmp_path):
    inventory, env, root = metered
    (root / "reply.txt").write_text("ERR -113,\"Undefined header\"\n")
    proc = bench(tmp_path, built_packs, tiny_data, env, *RUN, "--device", "board-host", "--inventory", str(inventory))
    assert proc.returncode == 0, proc.stderr
    entry, _ = _entry(proc.stdout)
    meter = entry["speed"]["telemetry"]["meter"]
    assert meter["available"] is False and meter["info"]["runs_on"] == "host"
    assert meter["reason"] == "meter (labmeter): unparseable output: 'ERR -113,\"Undefined header\"'"
    assert entry["speed"]["energy_mj_per_inference"] is None


def test_a_meter_on_the_board_still_works(metered, built_packs, tiny_data, tmp_path):
    inventory, env, _ = metered
    proc = bench(tmp_path, built_packs, tiny_data, env, *RUN, "--device", "board-own", "--inventory", str(inventory))
    assert proc.returncode == 0, proc.stderr
    entry, _ = _entry(proc.stdout)
    meter = entry["speed"]["telemetry"]["meter"]
    assert meter["available"] is True and meter["info"]["runs_on"].startswith("the machine running the worker")
    assert meter["summary"]["power"]["mean_mw"] == 1250.0
    assert entry["speed"]["energy_mj_per_inference"] > 0
