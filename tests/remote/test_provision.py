"""`bench device provision` against a real loopback sshd board (tests/remote/lab.py), and `bench run` on it (issue 19).

One board, one model, --limit 6: provisioned cold (this checkout's wheel built, numpy/psutil/onnxruntime wheels
fetched with pip download for the board's python and platform, sent over SSH into the board's cas/, installed in
<workdir>/venv); provisioned again ("already current", nothing touched); a run on it uses the venv's python; a record
whose wheel differs from the host's is refused with exit 3 and the command that fixes it, unless
--allow-stale-board; a malformed record is one line naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import EXIT_UNAVAILABLE
from tests.remote.test_remote_run import bench, run_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = ["run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset", "london-frl",
       "--limit", "6", "--threads", "1", "--min-count", "3", "--min-duration", "0.2", "--bootstrap", "50",
       "--no-build"]


@pytest.fixture(scope="module")
def board(lab):
    return lab.add("board-prov")


def test_provision_then_current_then_run_then_stale(board, lab, built_packs, tiny_data, tmp_path):
    inv = ["--inventory", str(lab.inventory)]
    record_file = board.workdir / "provision.json"
    venv_python = board.workdir / "venv" / "bin" / "python"

    cold = bench(tmp_path, built_packs, tiny_data, "device", "provision", "board-prov", "--target", "cpu", *inv)
    assert cold.returncode == 0, cold.stderr
    assert "board board-prov: provisioned in" in cold.stdout
    record = json.loads(record_file.read_text())
    assert record["extra"] == "device-onnx" and record["runtime"] == "onnxruntime"
    assert len(record["wheel_sha256"]) == 64 and record["wheel"].startswith("edge_fair_bench-")
    assert any(n.startswith("onnxruntime-") for n in record["dependencies"])
    assert any(n.startswith("numpy-") for n in record["dependencies"])
    assert venv_python.exists()
    # the venv holds the wheel, not the checkout: its harness lives in the venv's site-packages
    site = next((board.workdir / "venv").glob("lib/python3*/site-packages"))
    assert (site / "harness" / "device" / "health.py").is_file()
    assert not (site / "edge_fair_bench_checkout.pth").exists()

    mtime = record_file.stat().st_mtime_ns
    again = bench(tmp_path, built_packs, tiny_data, "device", "provision", "board-prov", "--target", "cpu", *inv)
    assert again.returncode == 0, again.stderr
    assert "board board-prov: already current" in again.stdout
    assert record_file.stat().st_mtime_ns == mtime  # nothing touched

    run = bench(tmp_path, built_packs, tiny_data, *RUN, "--device", "board-prov", *inv)
    assert run.returncode == 0, run.stderr
    doc = run_json(Path(run.stdout.strip().splitlines()[-1]))
    assert doc["launcher"]["board"]["python"] == str(venv_python)
    assert doc["launcher"]["provision"]["wheel_sha256"] == record["wheel_sha256"]
    assert [e["status"] for e in doc["entries"]] == ["ok"]

    # A board provisioned with another wheel is refused before anything runs: exit 3, one line, the fix named.
    record_file.write_text(json.dumps({**record, "wheel_sha256": "0" * 64}))
    stale = bench(tmp_path, built_packs, tiny_data, *RUN, "--device", "board-prov", *inv)
    assert stale.returncode == EXIT_UNAVAILABLE, stale.stderr
    lines = stale.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stale.stderr, stale.stderr
    assert "board board-prov" in lines[0] and "000000000000" in lines[0] and record["wheel_sha256"][:12] in lines[0]
    assert f"bench device provision board-prov --target cpu --inventory {lab.inventory}" in lines[0]

    allowed = bench(tmp_path, built_packs, tiny_data, *RUN, "--device", "board-prov", *inv, "--allow-stale-board")
    assert allowed.returncode == 0, allowed.stderr
    assert "--allow-stale-board" in allowed.stdout + allowed.stderr

    # What the board says is data: a malformed record is one line naming the field, never used as a path.
    record_file.write_text(json.dumps({**record, "wheel_sha256": "../../etc/passwd\u001b[31m"}))
    hostile = bench(tmp_path, built_packs, tiny_data, *RUN, "--device", "board-prov", *inv)
    assert hostile.returncode == EXIT_UNAVAILABLE
    lines = hostile.stderr.strip().splitlines()
    assert len(lines) == 1 and "field 'wheel_sha256'" in lines[0] and "\x1b" not in hostile.stderr

    # provisioning again repairs it
    fixed = bench(tmp_path, built_packs, tiny_data, "device", "provision", "board-prov", "--target", "cpu", *inv)
    assert fixed.returncode == 0 and "provisioned in" in fixed.stdout, fixed.stderr
    assert json.loads(record_file.read_text())["wheel_sha256"] == record["wheel_sha256"]
