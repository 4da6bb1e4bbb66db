"""The device side on an old Python for real (issue 21): the worker runs real model jobs on an emulated Debian
bullseye arm64 board (python3 3.9.2; numpy 1.26.4, psutil 7.2.2, onnxruntime 1.19.2, tflite-runtime 2.13.0, tomli:
cp39 aarch64 wheels, harness/launchers/arm64_board.py RECIPES["bullseye"]), through `bench run --emulate
arm64@bullseye`, and the host scores them. One board serves both runtimes: the onnx entry on onnxruntime 1.19.2 and
the LiteRT entry on tflite-runtime 2.13.0 (what pyproject's device-litert extra installs below Python 3.10). The
board is built the first time (3-12 minutes on the 2-core CI machine), then restored from its cached tarball
(seconds), as the bookworm board of tests/e2e/test_arm64_board.py; same tools, same skip/fail rule (CI=true: a
missing tool fails). One x86 run and one emulated run, of both entries on the same six faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_arm64_board import _bench, _need_board

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.arm64]

MODEL, ONNX, LITERT, INT8 = "gender-dlib", "onnx-int8", "tflite-fp32", "tflite-int8"
SMALL = ["--model", MODEL, "--variant", ONNX, "--variant", LITERT, "--dataset", "london-frl", "--limit", "6",
         "--threads", "1", "--bootstrap", "20", "--no-build"]


def _entry(run_dir: Path, variant: str) -> tuple[dict, dict]:
    doc = json.loads((run_dir / "run.json").read_text())
    return doc, next(e for e in doc["entries"] if e["entry"] == f"{MODEL}--{variant}")


def _scored(run_dir: Path, variant: str) -> dict[str, tuple[str, float]]:
    """Per face, the host's decision and the model's P(male), from the entry's sample records."""
    path = run_dir / "samples" / f"{MODEL}--{variant}.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["sample_id"]: (r["pred"], r["prob_male"]) for r in recs if r.get("pred") is not None}


@pytest.fixture(scope="module")
def runs(built_packs, data_root, tmp_path_factory) -> tuple[Path, Path]:
    """(x86 run, emulated bullseye run) of both entries on the same six faces."""
    _need_board()
    tmp = tmp_path_factory.mktemp("bullseye")
    common = ["--results-dir", str(tmp / "results"), "--cache-dir", str(built_packs), "--data-root",
              str(data_root)]
    _, out = _bench(["run", "--target", "cpu", *SMALL, "--min-count", "3", "--min-duration", "0.1", *common])
    x86 = Path(out.strip().splitlines()[-1])
    _, out = _bench(["run", "--target", "rpi", "--emulate", "arm64@bullseye", *SMALL, "--variant", INT8, *common])
    return x86, Path(out.strip().splitlines()[-1])


def _same_decisions(x86: Path, arm: Path, variant: str, atol: float) -> None:
    arm_out, x86_out = _scored(arm, variant), _scored(x86, variant)
    assert len(arm_out) == 6 and set(arm_out) == set(x86_out)
    assert {k: v[0] for k, v in arm_out.items()} == {k: v[0] for k, v in x86_out.items()}
    assert np.allclose([arm_out[k][1] for k in sorted(arm_out)], [x86_out[k][1] for k in sorted(arm_out)], atol=atol)


def test_the_worker_runs_a_real_job_on_python_3_9_aarch64(runs):
    x86, arm = runs
    doc, e = _entry(arm, ONNX)
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
    _same_decisions(x86, arm, ONNX, atol=0.05)


def test_litert_runs_on_python_3_9_through_tflite_runtime(runs):
    """LiteRT below Python 3.10 is tflite-runtime 2.13 (ai-edge-litert has no cp39 wheel): XNNPACK requested and
    proven active (DELEGATE nodes in the interpreter's node list), the runtime's version in the backend record and
    the fingerprint, and the fp32 model's decisions those of the x86 host's ai-edge-litert run."""
    x86, arm = runs
    doc, e = _entry(arm, LITERT)
    assert e["status"] == "ok", e.get("reason")
    assert e["backend"]["runtime"] == "litert" and e["backend"]["version"] == "tflite-runtime 2.13.0"
    assert e["backend"]["requested"] == "xnnpack" and e["backend"]["ok"] is True
    active = e["backend"]["active"][0]
    assert active.startswith("xnnpack:") and int(active.split(":")[1].split()[0]) > 0, active
    runtimes = doc["device_environment"]["runtimes"]
    assert runtimes["tflite_runtime"] == "2.13.0" and runtimes["ai_edge_litert"] == "not installed", runtimes
    assert doc["device_environment"]["python"]["version"].startswith("3.9.")
    assert e["speed"]["validity"]["status"] == "INVALID" and e["metrics"]["rates"]
    _, host = _entry(x86, LITERT)
    assert host["status"] == "ok" and host["backend"]["version"].startswith("ai-edge-litert ")
    # fp32 on both (XNNPACK's NEON kernels in tflite-runtime 2.13 against its AVX2/AVX512 ones in ai-edge-litert):
    # the same graph in float32, differing only in summation order and FMA use, i.e. relative 1e-6-ish; 1e-3 on a
    # probability leaves room for that and none for a wrong input layout or scale.
    _same_decisions(x86, arm, LITERT, atol=1e-3)


def test_an_int8_model_on_tflite_runtimes_xnnpack_is_refused_saying_why(runs):
    """tflite-runtime 2.13's XNNPACK takes no quantized operator: gender-dlib tflite-int8 (all int8) asked for on
    XNNPACK is refused on the board with that reason in run.json, never run on the builtin kernels as "xnnpack"."""
    _, arm = runs
    _, e = _entry(arm, INT8)
    assert e["status"] != "ok" and "tflite-runtime 2.13.0's XNNPACK delegates float operators only" in e["reason"], e
