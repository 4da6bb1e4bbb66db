"""examples/nightly as written: the lab job's shell steps from nightly-hil.yml, run in order against the loopback lab
(two sshd boards in a labgrid pool, tests/remote/lab.py), with `bench run` killed (SIGKILL) mid-entry.

What the steps must do (issue 19, item 2): find the run they made from the results store (not `ls results`, which
holds index.sqlite), resume it once after the kill, measure precision loss against an x86 fp32 reference run on the
host (`reference.run` set), gate it against the baseline from the same board out of a folder of baselines from
several boards, write the JUnit and the reports, and exit with the gate's status (the baseline has an entry the run
lacks, so the example policy fails both categories: 12).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest
import yaml

from harness.environment import hostname_hash
from harness.errors import EXIT_GATE_BOTH
from harness.launchers.pool import Pool
from harness.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "unit"))  # helpers_results: the synthetic-but-scored baseline runs
from helpers_results import make_run  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKFLOW = REPO_ROOT / "examples" / "nightly" / "nightly-hil.yml"
ENTRY = "gender-dlib--onnx-fp32"
PLAN_ARGS = "--model gender-dlib --dataset london-frl --bootstrap 50 --no-build"
RUN_ARGS = "--variant onnx-fp32 --threads 1 --min-count 20 --min-duration 4"


def job_steps(job: str, matrix: dict[str, str], workspace: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """A job's env and its (name, shell) steps from the workflow, GitHub expressions filled in; `uses:` steps and
    the Install step (a pip install; the test's venv stands in for it) left out."""
    values = {**{f"matrix.{k}": v for k, v in matrix.items()}, "github.workspace": str(workspace), "env.RUN_ID": ""}

    def expand(text: str) -> str:
        return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", lambda m: values[m[1]], str(text))

    spec = yaml.safe_load(WORKFLOW.read_text())["jobs"][job]
    env = {k: expand(v) for k, v in spec["env"].items()}
    steps = [(s["name"], expand(s["run"])) for s in spec["steps"] if "run" in s and s["name"] != "Install"]
    return env, steps


def wait_for(what, timeout: float, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (found := what()) is not None:
            return found
        time.sleep(0.1)
    return None


def lane_run(proc: subprocess.Popen) -> psutil.Process | None:
    """The step's `bench run --pool ...` (not the reference run, not a resume)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for p in kids:
        try:
            cmd = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "run" in cmd and "--pool" in cmd and "--resume" not in cmd and any(c.endswith("bench") for c in cmd):
            return p
    return None


@pytest.fixture(scope="module")
def night_lab(lab):
    lab.add("night-a", tags={"target": "cpu"})
    lab.add("night-b", tags={"target": "cpu"})
    return lab


def test_lab_job_steps_resume_a_killed_run_and_gate_it_against_its_boards_baseline(
        night_lab, labgrid, built_packs, tiny_data, tmp_path):
    ws = tmp_path / "workspace"  # the job's checkout: the repository's examples/ and the test's venv as .venv
    ws.mkdir()
    (ws / "examples").symlink_to(REPO_ROOT / "examples")
    (ws / ".venv").symlink_to(Path(sys.prefix))
    results, baselines = ws / "results", tmp_path / "baselines" / "cpu"
    # Baselines accepted earlier, one per board: another target's, another x86 unit's, and this host's (the boards
    # here are this machine behind sshd). Only the last may judge tonight's run; it has an int8 entry the run lacks.
    others = tmp_path / "other-results"
    here = make_run(others, variants=("onnx-fp32", "onnx-int8"), environment={"hostname_sha256": hostname_hash()},
                    seed=11)
    make_run(others, target="rpi", variants=("onnx-fp32", "onnx-int8"), seed=12)
    make_run(others, variants=("onnx-fp32", "onnx-int8"), environment={"hostname_sha256": "0" * 16}, seed=13)
    for run_dir in others.glob("*/run.json"):
        subprocess.run(["examples/nightly/accept-baseline.sh", str(run_dir.parent), str(baselines)], cwd=ws,
                       check=True, capture_output=True, env=dict(os.environ, PATH=f"{sys.prefix}/bin:{os.environ['PATH']}"))

    env, steps = job_steps("lab", {"target": "cpu"}, ws)
    assert env["BOARD"] == "--pool target=cpu --pool-wait 3600" and "POLICY" not in env  # examples/policy.toml
    summary, github_env = tmp_path / "summary.md", tmp_path / "github.env"
    env.update(LG_COORDINATOR=labgrid.address, BENCH_INVENTORY=str(night_lab.inventory), BENCH_DATA=str(tiny_data),
               BENCH_CACHE=str(built_packs), BENCH_RESULTS=str(results), BASELINE_DIR=str(baselines),
               PLAN_ARGS=PLAN_ARGS, RUN_ARGS=RUN_ARGS, GITHUB_ENV=str(github_env),
               GITHUB_STEP_SUMMARY=str(summary))
    env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    assert [name for name, _ in steps] == ["Release places held by dead bench processes of this host",
                                          "Benchmark, gate, report"]

    codes, killed = [], None
    for name, script in steps:
        log = tmp_path / f"step-{len(codes)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=ws, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                if "night.sh" in script:
                    killed = wait_for(lambda: lane_run(proc), 300, proc)
                    assert killed is not None, log.read_text()[-3000:]
                    chunk = wait_for(lambda: next(results.glob(f"*/work/jobs/{ENTRY}/out/outputs/chunk-*.npz"), None),
                                     300, proc)
                    assert chunk is not None, log.read_text()[-3000:]
                    killed.kill()  # the host's bench process dies mid-entry (SIGKILL): no clean-up of its own
                proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
        codes.append(proc.returncode)
    text = (tmp_path / "step-1.log").read_text()
    assert codes == [0, EXIT_GATE_BOTH], text[-3000:]

    run_id = (ws / "nightly-out" / "run-id").read_text().strip()
    assert f"night: bench run: exit {128 + 9}" in text and f"night: resuming {run_id} once" in text
    assert github_env.read_text() == f"RUN_ID={run_id}\n"
    doc = json.loads((results / run_id / "run.json").read_text())
    assert doc["status"] == "complete" and doc["target"]["id"] == "cpu"
    assert doc["launcher"]["health"]["ssh_command_s"] > 0  # what one command over SSH costs on this board account
    (entry,) = doc["entries"]
    assert entry["status"] == "ok" and entry["device"] in ("night-a", "night-b")
    lines = (results / run_id / "samples" / f"{ENTRY}.jsonl").read_text().splitlines()
    ids = [json.loads(ln)["sample_id"] for ln in lines if ln.strip()]
    assert len(ids) == len(set(ids)) == 24  # the killed entry's samples: each once after the resume
    # precision loss against the host's x86 fp32, a separate run made first (not the board's own fp32)
    ref = json.loads((results / doc["reference"]["run"] / "run.json").read_text())
    assert ref["target"]["id"] == "cpu" and ref["launcher"]["kind"] == "local" and ref["run_id"] != run_id
    assert entry["metrics"]["reference"]["run"] == ref["run_id"]

    # the gate took this host's baseline of the three and failed the entry the run lost, in both categories
    assert f"baseline {here.run_id}: target cpu, real hardware" in text
    suite = ET.parse(ws / "nightly-out" / "gate-cpu.xml").getroot().find("testsuite")
    lost = [c.find("failure") for c in suite.findall("testcase") if c.get("classname") == "gender-dlib--onnx-int8"]
    assert lost and all(f is not None and "not in this run" in f.get("message") for f in lost)
    assert {f.get("type") for f in lost} == {"perf", "fairness"}
    assert (ws / "nightly-out" / "report-cpu.html").stat().st_size > 0
    assert summary.read_text() == (ws / "nightly-out" / "report-cpu.md").read_text()
    assert all(p.acquired is None for p in Pool(labgrid.address).places())  # every place released
