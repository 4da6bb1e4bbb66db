"""Issue 12's last step: `bench run --target rpi --pool target=rpi` on the emulated aarch64 board behind sshd.

The lab (tests/remote/lab.py): Debian's sshd on 127.0.0.1 whose board `python` is the emulated board's
(harness/launchers/arm64_exec.py: every device-side command runs under qemu-user inside the arm64 rootfs, the work
folder bind-mounted in), published by a labgrid exporter as a place tagged target=rpi. Cases: the run completes
with aarch64 outputs, the board is recorded as emulated (never as a Raspberry Pi) and every timing is INVALID
"emulated"; the board killed mid-entry leaves a resumable run (exit 3) that `--resume --pool target=rpi` finishes.

Needs root and qemu-user-static, binfmt-support, mmdebstrap, arch-test (as tests/e2e/test_arm64_board.py: skips without them,
fails under CI=true). Warm rootfs: about 2-3 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import EXIT_UNAVAILABLE
from harness.launchers.arm64_board import DEFAULT_CPU, Arm64Board
from harness.launchers.arm64_exec import write_shim
from tests.e2e.test_arm64_board import _need_board, built_entries
from tests.remote.lab import wait_for_first_chunk
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


def _assert_emulated(doc: dict) -> None:
    assert doc["status"] == "complete"
    assert {e["entry"]: e["status"] for e in doc["entries"]} == dict.fromkeys(ENTRIES, "ok")
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
        ids = [json.loads(ln)["sample_id"] for ln in (run_dir / "samples" / f"{e}.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) == 6, e
    print("\n" + json.dumps({e["entry"]: e["speed"]["validity"]["reasons"][0] for e in doc["entries"]}))
