"""Issue 12's last step: `bench run --target rpi --pool target=rpi` on the emulated aarch64 board behind sshd.

The lab (tests/remote/lab.py): Debian's sshd on 127.0.0.1 whose board `python` is the emulated board's
(harness/launchers/arm64_exec.py: every device-side command runs under qemu-user inside the arm64 rootfs, the work
folder bind-mounted in), published by a labgrid exporter as a place tagged target=rpi. Cases: the run completes
with aarch64 outputs, the board is recorded as emulated (never as a Raspberry Pi) and every timing is INVALID
"emulated"; the board killed mid-entry leaves a resumable run (exit 3) that `--resume --pool target=rpi` finishes;
with its power switch (harness/launchers/sshd_power.py in the inventory's `power`, issue 19) the board killed
mid-entry is power-cycled by the run and the entry retried once on it, and `bench pool power` off takes the
qemu-user workers with sshd.

Needs root and qemu-user-static, binfmt-support, mmdebstrap, arch-test (as tests/e2e/test_arm64_board.py: skips without them,
fails under CI=true). Warm rootfs: about 2-3 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest

from harness.errors import EXIT_UNAVAILABLE
from harness.launchers.arm64_board import DEFAULT_CPU, Arm64Board
from harness.launchers.arm64_exec import write_shim
from tests.e2e.test_arm64_board import _need_board, built_entries
from tests.remote.lab import power_cycled_run, wait_for_first_chunk, wait_port
from tests.remote.test_power import pool_cli
from tests.remote.test_remote_run import bench, run_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.arm64]

ENTRIES = {"gender-dlib--onnx-int8", "gender-dlib--tflite-int8"}
RUN = ["run", "--target", "rpi", "--model", "gender-dlib", "--variant", "onnx-int8", "--variant", "tflite-int8",
       "--dataset", "london-frl", "--limit", "6", "--threads", "1", "--min-count", "3", "--bootstrap", "50",
       "--no-build"]


@pytest.fixture(scope="module")
def emulated_lab(lab, built_packs):
    _need_board()
    missing = ENTRIES - built_entries(built_packs, ("gender-dlib",), ("onnx-int8", "tflite-int8"))
    # Building does not depend on the host's int8 kernels (a variant outside fidelity tolerance is built, flagged):
    # these entries exist on every host, and a cache without them is a setup error, said here rather than mid-run.
    assert not missing, f"entries not built in {built_packs}: {sorted(missing)}"
    Arm64Board(built_packs, log=lambda m: None).ensure()
    board = lab.add("rpi-emu", runtimes=(), tags={"target": "rpi"})
    board.python = write_shim(board.dir / "python-arm64", workdir=board.workdir, cpu=DEFAULT_CPU, cache=built_packs)
    lab.write()
    return lab


@pytest.fixture(scope="module")
def coordinator(emulated_lab, labgrid):
    return labgrid.address


def _pool(lab, coordinator) -> list[str]:
    return ["--pool", "target=rpi", "--coordinator", coordinator, "--inventory", str(lab.inventory)]


def _samples(run_dir: Path, entry: str) -> list[str]:
    return [json.loads(ln)["sample_id"] for ln in (run_dir / "samples" / f"{entry}.jsonl").read_text().splitlines()]


def _assert_emulated(doc: dict, entries: set[str] = ENTRIES) -> None:
    assert doc["status"] == "complete"
    assert {e["entry"]: e["status"] for e in doc["entries"]} == dict.fromkeys(entries, "ok")
    env = doc["device_environment"]
    assert env["cpu"]["arch"] == "aarch64"  # the worker ran inside the board, not on this x86 host
    assert env["emulation"]["by"].startswith("qemu-user ") and env["emulation"]["cpu"] == DEFAULT_CPU
    launcher = doc["launcher"]
    assert launcher["kind"] == "ssh" and launcher["labgrid"]["place"] == "rpi-emu"
    assert launcher["health"]["device_model"].startswith("emulated (qemu-user ")  # never "Raspberry Pi"
    assert launcher["emulation"] == env["emulation"]
    for e in doc["entries"]:
        v = e["speed"]["validity"]
        assert v["status"] == "INVALID" and v["reasons"][0].startswith("emulated (qemu-user "), e["entry"]
        assert e["device"] == "rpi-emu" and e["metrics"]["rates"], e["entry"]


def test_pool_run_on_the_emulated_board(emulated_lab, coordinator, built_packs, tiny_data, tmp_path):
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "0.2", *_pool(emulated_lab, coordinator))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = run_json(Path(proc.stdout.strip().splitlines()[-1]))
    _assert_emulated(doc)
    # Two model files and one input array (both entries feed the same resize) sent once each, over SSH.
    assert doc["launcher"]["sync"] | {"uploaded_bytes": 0} == {"uploaded_files": 3, "cas_hits": 1, "uploaded_bytes": 0}


def test_board_killed_mid_entry_then_resumed_from_the_pool(emulated_lab, coordinator, built_packs, tiny_data,
                                                           tmp_path):
    board = emulated_lab.boards["rpi-emu"]
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "8", *_pool(emulated_lab, coordinator),
                 wait=False)
    try:
        # its (>= 8 s) timing windows run on the board once the first chunk is back
        assert wait_for_first_chunk(proc, tmp_path, timeout=180), proc.communicate()[1][-3000:]
        board.kill()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if board.proc is None:
            board.start()
    assert proc.returncode == EXIT_UNAVAILABLE, err[-3000:]
    assert "was lost during" in " ".join(err.split())
    (run_dir,) = [p.parent for p in tmp_path.glob("*/run.json")]
    doc = run_json(run_dir)
    assert doc["status"] == "partial"
    failed = [e for e in doc["entries"] if e["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["failure"] == "infrastructure" and failed[0]["device"] == "rpi-emu"

    resumed = bench(tmp_path, built_packs, tiny_data, "run", "--resume", run_dir.name,
                    *_pool(emulated_lab, coordinator))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    doc = run_json(run_dir)
    _assert_emulated(doc)
    assert doc["data"]["datasets"][0]["n_evaluated"] == 6
    for e in ENTRIES:  # every sample scored once: none lost with the board, none fed twice after the resume
        ids = _samples(run_dir, e)
        assert len(ids) == len(set(ids)) == 6, e
    print("\n" + json.dumps({e["entry"]: e["speed"]["validity"]["reasons"][0] for e in doc["entries"]}))


# The board's power switch (harness/launchers/sshd_power.py: off kills its sshd and everything under it, the qemu-user
# workers included; on starts the sshd again), given in an inventory of its own so that the kill above stays a
# board without one. The health check after the cycle runs under qemu: its boot timeout leaves room for it.
POWER_BOOT_TIMEOUT_S = 120


def test_board_killed_mid_entry_is_power_cycled_and_the_entry_retried_on_it(emulated_lab, coordinator, built_packs,
                                                                           tiny_data, tmp_path):
    board = emulated_lab.boards["rpi-emu"]
    inventory = emulated_lab.write(tmp_path / "boards-power.toml", power={"rpi-emu": POWER_BOOT_TIMEOUT_S})
    entry = "gender-dlib--onnx-int8"
    cut = RUN.index("tflite-int8")
    one_entry = RUN[:cut - 1] + RUN[cut + 1:]  # onnx-int8 alone: the board is slow
    proc = bench(tmp_path, built_packs, tiny_data, *one_entry, "--min-duration", "8", "--pool", "target=rpi",
                 "--coordinator", coordinator, "--inventory", str(inventory), wait=False)
    try:
        run_dir, doc, cycle = power_cycled_run(proc, tmp_path, board, entry, first_chunk_timeout=180, timeout=300)
    finally:
        if board.sshd_pid() is None and board.proc is None:
            board.start()
    _assert_emulated(doc, {entry})
    assert cycle["switch"] == "inventory power commands" and cycle["boot_timeout_s"] == POWER_BOOT_TIMEOUT_S
    assert doc["data"]["datasets"][0]["n_evaluated"] == 6
    ids = _samples(run_dir, entry)
    assert len(ids) == len(set(ids)) == 6  # every sample once: none lost with the board, none fed twice on retry
    print("\n" + json.dumps({k: cycle[k] for k in ("cycle_s", "shell_s", "boot_timeout_s")}))


def test_power_off_takes_the_emulated_workers_with_it(emulated_lab, coordinator, tmp_path):
    # `bench pool power PLACE off` through the inventory's switch while an emulated python runs in an ssh session:
    # sshd, the session and the qemu-user process all go; `on` brings the board's shell back.
    board = emulated_lab.boards["rpi-emu"]
    inventory = emulated_lab.write(tmp_path / "boards-power.toml", power={"rpi-emu": POWER_BOOT_TIMEOUT_S})
    ssh = subprocess.Popen(["ssh", "-i", str(emulated_lab.client_key), "-o", "BatchMode=yes",
                            "-o", f"UserKnownHostsFile={emulated_lab.known_hosts}", "-p", str(board.port),
                            f"{board.user}@127.0.0.1", str(board.python),
                            "-c", "'import time; print(1, flush=True); time.sleep(600)'"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert ssh.stdout.readline().strip() == "1", ssh.stderr.read()[-2000:]  # python3 runs inside the board
        under = psutil.Process(board.sshd_pid()).children(recursive=True)
        emulated = [p for p in under if "qemu-aarch64" in _exe(p)]
        assert emulated, [(p.pid, p.name(), _exe(p)) for p in under]  # the qemu-user worker, under the board's sshd
        off = pool_cli(coordinator, "power", "rpi-emu", "off", "--inventory", str(inventory))
        assert off.returncode == 0 and "rpi-emu: power off done" in off.stdout, off.stderr
        assert board.sshd_pid() is None
        gone = psutil.wait_procs(under, timeout=10)[1]
        assert not [p for p in gone if p.status() != psutil.STATUS_ZOMBIE], gone
        assert ssh.wait(30) != 0  # the session died with the board
        on = pool_cli(coordinator, "power", "rpi-emu", "on", "--inventory", str(inventory))
        assert on.returncode == 0 and "rpi-emu: power on done" in on.stdout, on.stderr
        wait_port(board.port)
    finally:
        if ssh.poll() is None:
            ssh.kill()
        if board.proc is not None and board.proc.poll() is not None:
            board.proc = None  # the sshd the lab started, killed by the switch (poll reaped it)
        if board.sshd_pid() is None:
            board.start()


def _exe(proc: psutil.Process) -> str:
    try:
        return proc.exe()
    except psutil.Error:
        return ""
