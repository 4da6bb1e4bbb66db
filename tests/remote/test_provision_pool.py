"""`bench device provision --pool FILTER` on the loopback lab (issue 19): three sshd boards (tests/remote/lab.py)
published as labgrid places; prov-a and prov-b are tagged shelf=good, prov-b and prov-x mixed=yes, and prov-x's
python is missing.

Cases: a two-place pool provisioned in one command (each board's venv runs its own installed harness, `--json` has
one record per place, the harness wheel built once for both); a pool where one board is broken (exit 3 and one line
naming it, the other board provisioned); a place another process holds is skipped, naming its holder (exit 3), and
never touched. Every place is released afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness.errors import EXIT_UNAVAILABLE
from harness.launchers.pool import Pool, holder_name
from tests.remote.test_remote_run import bench

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def prov_lab(lab):
    lab.add("prov-a", tags={"target": "cpu", "shelf": "good"})
    lab.add("prov-b", tags={"target": "cpu", "shelf": "good", "mixed": "yes"})
    broken = lab.add("prov-x", tags={"target": "cpu", "mixed": "yes"})
    broken.python = broken.dir / "no-such-python"  # the inventory names a python the board does not have
    lab.write()
    return lab


@pytest.fixture(scope="module")
def coordinator(prov_lab, labgrid):
    return labgrid.address


@pytest.fixture(scope="module")
def host_cache(tmp_path_factory):
    """A host cache of this module's own: the first test's command finds no wheel and builds it."""
    return tmp_path_factory.mktemp("prov-cache")


def provision_pool(lab, coordinator, cache, tmp_path, *more: str):
    return bench(tmp_path, cache, tmp_path, "device", "provision", "--coordinator", coordinator, "--inventory",
                 str(lab.inventory), *more)


def held(coordinator: str) -> list[str]:
    return [p.name for p in Pool(coordinator).places() if p.acquired]


def venv_harness(board) -> tuple[str, str]:
    """(version, module path) of the harness the board's venv imports, run outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(board.workdir / "venv" / "bin" / "python"), "-c",
                           "import harness, numpy, onnxruntime; print(harness.__version__); print(harness.__file__)"],
                          capture_output=True, text=True, env=env, cwd=board.dir, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, path = proc.stdout.split()
    return version, path


def test_a_two_place_pool_is_provisioned_in_one_command(prov_lab, coordinator, host_cache, tmp_path):
    proc = provision_pool(prov_lab, coordinator, host_cache, tmp_path, "--pool", "shelf=good", "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert sorted(r["place"] for r in records) == ["prov-a", "prov-b"]
    assert all(r["status"] == "provisioned" and r["exit_code"] == 0 for r in records), records
    assert all(r["runtime"] == "onnxruntime" and r["extra"] == "device-onnx" for r in records)
    # the wheel was built once, on the host, for both boards
    assert proc.stderr.count("building the harness wheel") == 1, proc.stderr
    assert len(list((host_cache / "provision" / "wheels").glob("*/*.whl"))) == 1
    assert len({r["record"]["wheel_sha256"] for r in records}) == 1
    for r in records:
        board = prov_lab.boards[r["place"]]
        assert json.loads((board.workdir / "provision.json").read_text())["wheel_sha256"] == \
            r["record"]["wheel_sha256"]
        version, path = venv_harness(board)  # a working venv with its own harness, not the checkout
        assert version == r["record"]["harness_version"] and path.startswith(str(board.workdir / "venv"))
        assert f"{r['place']}: provisioned, python {r['python']}, onnxruntime [device-onnx]" in proc.stderr
    assert "pool shelf=good: 2 of 2 places ready (2 provisioned)" in proc.stderr
    assert held(coordinator) == []


def test_a_broken_board_fails_alone(prov_lab, coordinator, host_cache, tmp_path):
    proc = provision_pool(prov_lab, coordinator, host_cache, tmp_path, "--pool", "mixed=yes", "--jobs", "2")
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = {ln.split(":", 1)[0]: ln for ln in proc.stdout.splitlines() if ln.startswith("prov-")}
    assert sorted(lines) == ["prov-b", "prov-x"]
    assert lines["prov-x"].startswith("prov-x: failed (exit 3)") and "does not run" in lines["prov-x"]
    assert lines["prov-b"].startswith(("prov-b: provisioned", "prov-b: already current")), lines["prov-b"]
    assert (prov_lab.boards["prov-b"].workdir / "provision.json").is_file()
    venv_harness(prov_lab.boards["prov-b"])
    assert not (prov_lab.boards["prov-x"].workdir / "provision.json").exists()
    assert "pool mixed=yes: 1 of 2 places ready" in proc.stdout and proc.stdout.rstrip().endswith("exit 3")
    assert held(coordinator) == []


def test_a_place_another_process_holds_is_skipped_naming_its_holder(prov_lab, coordinator, host_cache, tmp_path):
    pool = Pool(coordinator)
    lease = pool.acquire({"name": "prov-a"}, wait_s=30)
    record = prov_lab.boards["prov-a"].workdir / "provision.json"
    before = record.stat().st_mtime_ns if record.exists() else None
    try:
        proc = provision_pool(prov_lab, coordinator, host_cache, tmp_path, "--pool", "shelf=good")
        assert held(coordinator) == ["prov-a"]  # still ours: never released nor taken by the command
    finally:
        pool.release(lease)
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("prov-a:")]
    assert line.startswith("prov-a: skipped") and f"held by {holder_name()}; not provisioned" in line, line
    assert (record.stat().st_mtime_ns if record.exists() else None) == before  # the held board was not touched
    assert any(ln.startswith(("prov-b: provisioned", "prov-b: already current")) for ln in proc.stdout.splitlines())
    assert held(coordinator) == []
