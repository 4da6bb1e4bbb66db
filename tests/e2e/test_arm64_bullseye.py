"""The device side on an old Python for real (issue 21): the worker runs a real model job on an emulated Debian
bullseye arm64 board (python3 3.9.2; numpy 2.0.2, psutil 7.2.2, onnxruntime 1.19.2, tomli: the newest cp39 aarch64
wheels, harness/launchers/arm64_board.py RECIPES["bullseye"]), through `bench run --emulate arm64@bullseye`, and
the host scores it. The board is built the first time (about 3-4 minutes on the 2-core CI machine), then restored
from its cached tarball (seconds), as the bookworm board of tests/e2e/test_arm64_board.py; same tools, same
skip/fail rule (CI=true: a missing tool fails)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_arm64_board import _bench, _need_board

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.arm64]

MODEL, VARIANT = "gender-dlib", "onnx-int8"
SMALL = ["--model", MODEL, "--variant", VARIANT, "--dataset", "london-frl", "--limit", "6", "--threads", "1",
         "--bootstrap", "20", "--no-build"]


def _entry(run_dir: Path) -> tuple[dict, dict]:
    doc = json.loads((run_dir / "run.json").read_text())
    return doc, next(e for e in doc["entries"] if e["entry"] == f"{MODEL}--{VARIANT}")


def _scored(run_dir: Path) -> dict[str, tuple[str, float]]:
    """Per face, the host's decision and the model's P(male), from the entry's sample records."""
    path = run_dir / "samples" / f"{MODEL}--{VARIANT}.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["sample_id"]: (r["pred"], r["prob_male"]) for r in recs if r.get("pred") is not None}


def test_the_worker_runs_a_real_job_on_python_3_9_aarch64(built_packs, data_root, tmp_path):
    _need_board()
    common = ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(built_packs), "--data-root",
              str(data_root)]
    _, out = _bench(["run", "--target", "cpu", *SMALL, "--min-count", "3", "--min-duration", "0.1", *common])
    x86 = Path(out.strip().splitlines()[-1])
    _, out = _bench(["run", "--target", "rpi", "--emulate", "arm64@bullseye", *SMALL, *common])
    arm = Path(out.strip().splitlines()[-1])

    doc, e = _entry(arm)
    assert e["status"] == "ok", e.get("reason")
    env = doc["device_environment"]
    assert env["python"]["version"].startswith("3.9."), env["python"]  # the board's interpreter, not the host's
    assert env["os"]["distribution"] == "Debian GNU/Linux 11 (bullseye)"
    assert env["cpu"]["arch"] == "aarch64" and env["emulation"]["rootfs"].startswith("bullseye-arm64-")
    assert e["backend"]["ok"] is True and e["backend"]["version"] == "1.19.2"  # the cp39 onnxruntime
    assert e["speed"]["validity"]["status"] == "INVALID"  # emulated timings
    assert doc["target"]["profile"]["source"] == "built-in"
    assert e["metrics"]["rates"], "not scored on the host"
    # The same int8 model on the same six faces, aarch64 (MLAS NEON, onnxruntime 1.19.2) against this x86 host
    # (1.31.1, AVX2 or VNNI kernels): the same decisions, P(male) within a few of the output's 1/255 steps (the
    # faces are far from 0.5: 0.96, 0.99 and 0.0 here; measured equal to the last bit on an AVX2 host).
    arm_out, x86_out = _scored(arm), _scored(x86)
    assert len(arm_out) == 6 and set(arm_out) == set(x86_out)
    assert {k: v[0] for k, v in arm_out.items()} == {k: v[0] for k, v in x86_out.items()}
    assert np.allclose([arm_out[k][1] for k in sorted(arm_out)], [x86_out[k][1] for k in sorted(arm_out)], atol=0.05)
