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
    # the clock's pings share the job's command relay, which started once
    assert json.loads((run_dir / "run.json").read_text())["launcher"]["relay"] == {"starts": 1}
    assert power["mean_mw"] == 2500.0 and power["readings"] >= 2
    timed = info["board_windows"]["timed"]
    n = _inferences(run_dir)
    assert info["inferences"] == n
    assert speed["energy_mj_per_inference"] == pytest.approx(2500.0 * (timed[1] - timed[0]) / n, rel=1e-9)
    assert power["idle_mw"] == 2500.0 and power["idle_readings"] >= 2  # --idle-s 2 at 0.1 s
    assert speed["device_state"]["idle"]["done"] is True
    # above idle, beside the gross figure: the idle board drew the same 2.5 W, so nothing is left, exactly
    net = speed["energy_above_idle"]
    assert net["probe"] == "meter" and net["net_mw"] == 0.0 and net["net_ci_mw"] == [0.0, 0.0]
    assert net["energy_mj_per_inference"] == pytest.approx(0.0, abs=1e-9 * speed["energy_mj_per_inference"])


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


# -- a meter published by the labgrid exporter (harness/launchers/sigrok_meter.py) -------------------------------
# sigrok's demo driver as the USB meter the exporter publishes (a SigrokDevice, read with Debian's sigrok-cli): its
# channel A0 set to read power, a square wave of 5 samples at 2 W then 5 at 3 W, 200 samples a second: mean 2.5 W.
DEMO_CONFIG = ["samplerate=200", "channel_group=A0:measured_quantity=power:offset=2.5:amplitude=0.5:pattern=square"]
LOW_MW, HIGH_MW = 2000.0, 3000.0


@pytest.fixture(scope="module")
def sigrok_lab(metered, lab):
    import shutil

    if shutil.which("sigrok-cli") is None:
        pytest.skip("sigrok-cli not installed (Debian: apt-get install sigrok-cli; .ci/run installs it)")
    lab.add("board-lg", tags={"target": "sigrok"}, sigrok={"driver": "demo", "channels": "A0"})
    return lab


@pytest.fixture(scope="module")
def coordinator(sigrok_lab, labgrid):
    return labgrid.address


def _lg_inventory(lab, root: Path, meter: str) -> Path:
    board = lab.boards["board-lg"]
    base = lab.inventory.read_text().split("[boards.")[0]
    path = root / f"boards-{meter.replace(':', '-')}.toml"
    path.write_text(base + f'[boards.board-lg]\npython = "{board.python}"\nworkdir = "{board.workdir}"\n'
                    f'meter = "{meter}"\nmeter_config = {json.dumps(DEMO_CONFIG)}\n')
    return path


def test_a_meter_published_by_the_labgrid_exporter_gives_power_and_energy(sigrok_lab, coordinator, metered,
                                                                          built_packs, tiny_data, tmp_path):
    _, env, _ = metered
    inventory = _lg_inventory(sigrok_lab, tmp_path, "labgrid:meter-board-lg")
    proc = bench(tmp_path, built_packs, tiny_data, env, *RUN, "--place", "board-lg", "--coordinator", coordinator,
                 "--inventory", str(inventory))
    assert proc.returncode == 0, proc.stderr
    entry, run_dir = _entry(proc.stdout)
    speed = entry["speed"]
    meter = speed["telemetry"]["meter"]
    info, power = meter["info"], meter["summary"]["power"]
    assert meter["available"] is True and info["runs_on"] == "host" and info["command"] == "sigrok-cli"
    assert info["labgrid"] == {"source": "labgrid", "place": "board-lg", "resource": "meter-board-lg",
                               "class": "SigrokDevice", "driver": "demo", "channels": "A0"}
    seen = meter["summary"]["fields"]["meter_power_mw"]
    assert (seen["min"], seen["max"]) == (LOW_MW, HIGH_MW)  # the square wave itself came through labgrid, sigrok-cli
    n_in = power["readings"]
    assert n_in >= 200  # 3 s or more at 200 readings a second
    # the pattern's mean is 2.5 W; the demo's square is not exactly periodic (where its sample buffer wraps a run is
    # 1 to 6 samples long instead of 5: 73 times in 20,000 samples), so a 3 s stretch of it is 2.5 W within 1%
    assert power["mean_mw"] == pytest.approx(2500.0, rel=0.01)
    timed = info["board_windows"]["timed"]
    window_s, n = timed[1] - timed[0], _inferences(run_dir)
    assert info["inferences"] == n
    # energy (the trapezoid over the readings, harness/trackers/telemetry.py) is mean power x window / inferences
    # within the stated interval: the 95% interval of the mean (batch means) times window / inferences
    energy = speed["energy_mj_per_inference"]
    lo, hi = (c * window_s / n for c in power["ci_mw"])
    assert lo <= energy <= hi
    assert power["idle_mw"] == pytest.approx(2500.0, rel=0.01) and power["idle_readings"] >= 200  # --idle-s 2
    net = speed["energy_above_idle"]  # the same waveform idle and active: the net figure with its Welch interval
    assert net["probe"] == "meter" and net["idle_readings"] == power["idle_readings"]
    assert net["net_mw"] == pytest.approx(power["mean_mw"] - power["idle_mw"])
    assert net["energy_ci_mj"][0] <= net["energy_mj_per_inference"] <= net["energy_ci_mj"][1]


def test_a_place_without_the_named_meter_resource_is_refused_in_one_line(sigrok_lab, coordinator, metered,
                                                                        built_packs, tiny_data, tmp_path):
    _, env, _ = metered
    inventory = _lg_inventory(sigrok_lab, tmp_path, "labgrid:um25c")
    proc = bench(tmp_path, built_packs, tiny_data, env, *RUN, "--place", "board-lg", "--coordinator", coordinator,
                 "--inventory", str(inventory))
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "um25c" in ln]
    assert "labgrid place board-lg: meter labgrid:um25c: the place has no such sigrok resource (it has: " \
           "meter-board-lg (SigrokDevice)" in line
    assert "Traceback" not in proc.stderr
