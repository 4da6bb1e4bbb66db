"""Issue 19, fan-out over a pool (`bench run --pool FILTER --boards N`, `--each`) on the loopback lab: two sshd
boards (tests/remote/lab.py) published as labgrid places tagged target=fan.

Cases: a fan-out asking for 3 boards of a 2-board pool goes on with the 2 after a bounded wait and completes with
every entry measured once, on one of the two boards, both boards recorded;
a board killed mid-entry leaves the fan-out, its entry goes back on the queue and the run completes on the other;
both boards killed leave a partial run (exit 3) that `--resume` completes with every sample once, the failures kept;
`--each` makes one run per board from one acquisition of the faces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import EXIT_UNAVAILABLE
from harness.launchers.pool import Pool
from tests.remote.lab import wait_for_first_chunk
from tests.remote.test_remote_run import bench, run_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VARIANTS = ("onnx-fp32", "onnx-fp16", "onnx-int8")
ENTRIES = {f"gender-dlib--{v}" for v in VARIANTS}
PLAN = ["run", "--target", "cpu", "--model", "gender-dlib", *(a for v in VARIANTS for a in ("--variant", v)),
        "--dataset", "london-frl", "--threads", "1", "--min-count", "20", "--bootstrap", "50", "--no-build"]


@pytest.fixture(scope="module")
def fan_lab(lab):
    lab.add("fan-a", tags={"target": "fan"})
    lab.add("fan-b", tags={"target": "fan"})
    return lab


@pytest.fixture(scope="module")
def coordinator(fan_lab, labgrid):
    return labgrid.address


def pool_args(lab, coordinator: str, *more: str) -> list[str]:
    return ["--pool", "target=fan", "--coordinator", coordinator, "--inventory", str(lab.inventory), *more]


def each_sample_once(run_dir: Path, entry: str) -> int:
    ids = [json.loads(ln)["sample_id"] for ln in (run_dir / "samples" / f"{entry}.jsonl").read_text().splitlines()
           if ln.strip()]
    assert len(ids) == len(set(ids)) == 24, (entry, len(ids), len(set(ids)))
    return len(ids)


def restart(lab) -> None:
    for b in lab.boards.values():
        if b.proc is None and b.sshd_pid() is None:
            b.start()


def held(coordinator: str) -> list[str]:
    return [p.name for p in Pool(coordinator).places() if p.acquired]


def test_two_board_fan_out_runs_every_entry_once_and_records_both_boards(fan_lab, coordinator, built_packs,
                                                                         tiny_data, tmp_path):
    # three asked, two in the pool: after a bounded wait the run goes on with the two, saying so
    proc = bench(tmp_path, built_packs, tiny_data, *PLAN, "--min-duration", "0.3",
                 *pool_args(fan_lab, coordinator, "--boards", "3", "--pool-wait", "3"))
    assert proc.returncode == 0, proc.stderr
    doc = run_json(Path(proc.stdout.strip().splitlines()[-1]))
    assert doc["status"] == "complete"
    assert {e["entry"] for e in doc["entries"]} == ENTRIES and len(doc["entries"]) == 3
    assert all(e["status"] == "ok" and e["board"] in ("fan-a", "fan-b") for e in doc["entries"])
    assert {e["board"] for e in doc["entries"]} == {"fan-a", "fan-b"}  # both took entries at once
    assert sorted(b["board"]["name"] for b in doc["boards"]) == ["fan-a", "fan-b"]
    assert all(b["fingerprint"]["python"] for b in doc["boards"])  # each board's own fingerprint
    for e in ENTRIES:
        each_sample_once(Path(proc.stdout.strip().splitlines()[-1]), e)
    assert "fan-out: 2 of 3 boards (no free labgrid place matching target=fan within" in proc.stderr
    assert "fan-out over 2 boards" in proc.stderr
    assert held(coordinator) == []


def test_board_killed_mid_run_its_entry_goes_to_the_other_board(fan_lab, coordinator, built_packs, tiny_data,
                                                                tmp_path):
    proc = bench(tmp_path, built_packs, tiny_data, *PLAN, "--min-duration", "6",
                 *pool_args(fan_lab, coordinator, "--boards", "2"), wait=False)
    try:
        assert wait_for_first_chunk(proc, tmp_path), proc.communicate()[1]
        fan_lab.boards["fan-a"].kill()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        restart(fan_lab)
    assert proc.returncode == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    doc = run_json(run_dir)
    assert doc["status"] == "complete" and all(e["status"] == "ok" for e in doc["entries"])
    assert {e["board"] for e in doc["entries"]} == {"fan-b"}  # fan-a finished nothing: it was killed at once
    (failure,) = doc["infrastructure_failures"]
    assert failure["board"] == "fan-a" and failure["entry"] in ENTRIES and failure["at_utc"]
    lost = {b["board"]["name"]: b.get("left") for b in doc["boards"]}
    assert lost["fan-a"] and lost["fan-b"] is None
    assert "back on the queue for another board" in err
    for e in ENTRIES:
        each_sample_once(run_dir, e)
    assert held(coordinator) == []


def test_fan_out_with_every_board_lost_is_resumed(fan_lab, coordinator, built_packs, tiny_data, tmp_path):
    proc = bench(tmp_path, built_packs, tiny_data, *PLAN, "--min-duration", "6",
                 *pool_args(fan_lab, coordinator, "--boards", "2"), wait=False)
    try:
        assert wait_for_first_chunk(proc, tmp_path), proc.communicate()[1]
        for b in fan_lab.boards.values():
            b.kill()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        restart(fan_lab)
    assert proc.returncode == EXIT_UNAVAILABLE, err
    assert "every board of the fan-out is gone" in err and "Traceback" not in err
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "run.json").is_file()]
    doc = run_json(run_dir)
    assert doc["status"] == "partial" and len(doc["infrastructure_failures"]) == 2
    resumed = bench(tmp_path, built_packs, tiny_data, "run", "--resume", run_dir.name)
    assert resumed.returncode == 0, resumed.stderr
    doc = run_json(run_dir)
    assert doc["status"] == "complete" and {e["entry"] for e in doc["entries"]} == ENTRIES
    assert all(e["status"] == "ok" for e in doc["entries"])
    assert len(doc["infrastructure_failures"]) == 2  # kept across the resume
    assert sorted(b["board"]["name"] for b in doc["boards"]) == ["fan-a", "fan-b"]
    for e in ENTRIES:
        each_sample_once(run_dir, e)
    assert held(coordinator) == []


def test_each_runs_the_plan_once_per_board(fan_lab, coordinator, built_packs, tiny_data, tmp_path):
    proc = bench(tmp_path, built_packs, tiny_data, *PLAN[:5], "--variant", "onnx-int8", *PLAN[11:],
                 "--min-duration", "0.2", *pool_args(fan_lab, coordinator, "--each"))
    assert proc.returncode == 0, proc.stderr
    run_dirs = [Path(line) for line in proc.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(run_dirs) == 2
    docs = [run_json(d) for d in run_dirs]
    assert sorted(d["launcher"]["board"]["name"] for d in docs) == ["fan-a", "fan-b"]
    assert all(d["status"] == "complete" and d["entries"][0]["status"] == "ok" for d in docs)
    assert proc.stderr.count("faces: the acquisition of run") == 1  # the second run took the first's faces
    for d in run_dirs:
        each_sample_once(d, "gender-dlib--onnx-int8")
