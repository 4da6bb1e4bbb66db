"""A board on JetPack 5's Python 3.8, for real (issue 21, "Old Pythons on real boards"): `bench device provision`
makes a venv with the board's own python 3.8, fetches the cp38 wheels its markers select (numpy 1.24, onnxruntime
1.19: pyproject.toml), installs this checkout's wheel with the `device-onnx` extra, and `bench run` runs a real
model job on it; the host scores it. The same wheel's `bench` refuses to run as the host side on 3.8 (exit 3, one
line). Needs a CPython 3.8 with ensurepip on this host (pyenv's here); the loopback board (tests/remote/lab.py) is
given it as its `python`. Then the same board is provisioned for LiteRT (`--runtime litert`: the `device-litert`
extra, whose markers give tflite-runtime 2.13 and numpy < 2 below Python 3.10) and runs a LiteRT job on XNNPACK."""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import EXIT_UNAVAILABLE
from tests.remote.test_remote_run import bench, run_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = ["run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset", "london-frl",
       "--limit", "6", "--threads", "1", "--min-count", "3", "--min-duration", "0.2", "--bootstrap", "50",
       "--no-build"]


def _python38() -> str | None:
    found = next(iter(sorted(glob.glob("/root/.pyenv/versions/3.8.*/bin/python3.8"))), None) or \
        shutil.which("python3.8")
    if found is None:
        return None
    ok = subprocess.run([found, "-c", "import ensurepip, venv"], capture_output=True)
    return found if ok.returncode == 0 else None


@pytest.fixture(scope="module")
def board(lab):
    python = _python38()
    if python is None:
        pytest.skip("no CPython 3.8 with ensurepip on this host (JetPack 5's Python)")
    b = lab.add("board-py38")
    b.python = Path(python)  # the board's own interpreter: no harness, no numpy, nothing installed for it
    lab.write()
    return b


def test_a_python_3_8_board_is_provisioned_and_runs_a_real_job(board, lab, built_packs, tiny_data, tmp_path):
    inv = ["--inventory", str(lab.inventory)]
    prov = bench(tmp_path, built_packs, tiny_data, "device", "provision", "board-py38", "--target", "cpu", *inv)
    assert prov.returncode == 0, prov.stderr
    record = json.loads((board.workdir / "provision.json").read_text())
    assert record["python"].startswith("3.8.")
    deps = record["dependencies"]
    assert any(n.startswith("onnxruntime-1.19.") and "cp38" in n for n in deps), deps  # the marker's choice
    assert any(n.startswith("numpy-1.24.") and "cp38" in n for n in deps), deps

    run = bench(tmp_path, built_packs, tiny_data, *RUN, "--device", "board-py38", *inv)
    assert run.returncode == 0, run.stderr
    doc = run_json(Path(run.stdout.strip().splitlines()[-1]))
    (e,) = doc["entries"]
    assert e["status"] == "ok", e.get("reason")
    assert doc["device_environment"]["python"]["version"].startswith("3.8.")  # the board's, not the host's
    assert e["backend"]["ok"] is True and e["backend"]["version"].startswith("1.19.")
    assert e["metrics"]["rates"], "not scored on the host"

    # The host side of the same install refuses Python 3.8 in one line, before importing anything that needs 3.10.
    venv_python = board.workdir / "venv" / "bin" / "python"
    host = subprocess.run([str(venv_python), "-m", "harness", "runs"], capture_output=True, text=True, timeout=60)
    assert host.returncode == EXIT_UNAVAILABLE
    lines = host.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs Python 3.10 or newer, this is 3.8." in lines[0], host.stderr


def test_a_python_3_8_board_runs_litert_through_tflite_runtime(board, lab, built_packs, tiny_data, tmp_path):
    inv = ["--inventory", str(lab.inventory)]
    prov = bench(tmp_path, built_packs, tiny_data, "device", "provision", "board-py38", "--target", "cpu",
                 "--runtime", "litert", *inv)
    assert prov.returncode == 0, prov.stderr
    record = json.loads((board.workdir / "provision.json").read_text())
    assert record["extra"] == "device-litert" and record["python"].startswith("3.8.")
    deps = record["dependencies"]
    assert any(n.startswith("tflite_runtime-2.13.") and "cp38" in n for n in deps), deps  # the marker's choice
    assert not any(n.startswith("ai_edge_litert") for n in deps), deps  # no cp38 wheel exists
    assert any(n.startswith("numpy-1.24.") and "cp38" in n for n in deps), deps

    run = bench(tmp_path, built_packs, tiny_data, *[("tflite-fp32" if a == "onnx-fp32" else a) for a in RUN],
                "--device", "board-py38", *inv)
    assert run.returncode == 0, run.stderr
    doc = run_json(Path(run.stdout.strip().splitlines()[-1]))
    (e,) = doc["entries"]
    assert e["status"] == "ok", e.get("reason")
    assert doc["device_environment"]["python"]["version"].startswith("3.8.")
    assert doc["device_environment"]["runtimes"]["tflite_runtime"].startswith("2.13.")
    assert e["backend"]["version"].startswith("tflite-runtime 2.13.") and e["backend"]["ok"] is True
    assert e["backend"]["requested"] == "xnnpack" and e["backend"]["active"][0].startswith("xnnpack:")
    assert e["metrics"]["rates"], "not scored on the host"
