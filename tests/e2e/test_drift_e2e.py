"""Two tiny real cpu runs (threads 1 and 2, same packs and data): each records this host's int8 kernel path, and
`bench compare A B --drift` pairs them through the cross-ISA functions. Nothing asserts which path this CPU has."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.kernel_path import PATHS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# onnx-fp32 only: it exists on every host (int8 packs may fail their fidelity check on some CPUs, issue 16).
ARGS = ["run", "--target", "cpu", "--model", "mobilefacenet", "--variant", "onnx-fp32", "--dataset", "london-frl",
        "--limit", "12", "--min-duration", "0.1", "--min-count", "5", "--bootstrap", "50", "--no-build"]


def bench(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def two_runs(built_packs, data_root, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    common = ["--results-dir", str(results), "--cache-dir", str(built_packs), "--data-root", str(data_root)]
    dirs = []
    for threads in ("1", "2"):
        code, out, err = bench(ARGS + ["--threads", threads] + common)
        assert code == 0, err[-2000:]
        dirs.append(Path(out.strip().splitlines()[-1]))
    return results, dirs


def test_runs_record_the_kernel_path_and_drift_pairs_them(two_runs):
    results, (a, b) = two_runs
    docs = [json.loads((d / "run.json").read_text()) for d in (a, b)]
    for doc in docs:
        kp = doc["environment"]["kernel_path"]
        assert kp["int8"] in PATHS and kp["runtime_reported"] == "not reported by the runtime"
    code, out, err = bench(["compare", docs[0]["run_id"], docs[1]["run_id"], "--drift", "--json",
                            "--results-dir", str(results)])
    assert code == 0, err
    block = json.loads(out)["drift"]
    assert block["within_isa"] and not block["kernel_paths_differ"]
    (entry,) = block["entries"]
    assert entry["entry"] == "mobilefacenet--onnx-fp32" and entry["threshold_source"] == "fp32"
    assert entry["max_abs_diff"] is not None and entry["n_ref"] == entry["n_dev"] > 0
    assert all(r["n"] > 0 for r in entry["flips"]) and entry["error_rates"]
