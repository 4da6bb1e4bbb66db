"""A hostile board (issue 17): everything a device sends back is untrusted input until harness/launchers/trust.py
has checked it. One case per item of the issue this branch owns (1-7, 11), each the real `bench run` against a
device whose worker returns a chosen corruption (hostile_board.py, board/sitecustomize.py), each asserting: the
documented exit code (3: an infrastructure error; 2 for a bad job file), one `bench: error:` line naming the device
and the field, no traceback, no raw control character on the terminal, nothing written outside the run, the planted
file outside the run never read into it, the run left partial (never complete, nothing scored or stored as
measured) and, for a sample of cases, `--resume` completing it with every sample exactly once.

Most cases use the cheap process boundary (the local launcher's worker child); the `ssh` cases run the same
corruptions on a loopback sshd board (tests/remote/lab.py: root + Debian's openssh-server) to prove the path end to
end through the SSH transfer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean, assert_error, assert_unchanged, snapshot
from hostile_board import (ENTRY, N_IMAGES, RUN, SECRET_VALUE, configure, local_env, plant_secret, ssh_board,
                           tiny_london)

from harness.errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny(data_root, tmp_path_factory) -> Path:
    return tiny_london(data_root, tmp_path_factory.mktemp("tiny-data"))


def assert_run_error(res, code: int, *fragments: str) -> str:
    """A run's stderr carries its progress log; exactly one `bench: error:` line, the last, with every fragment;
    no traceback and no raw NUL/ESC/C1 control from the board anywhere."""
    assert_clean(res)
    assert res.rc == code, res
    errors = [ln for ln in res.err.splitlines() if ln.startswith("bench: error:")]
    assert len(errors) == 1 and res.err.strip().splitlines()[-1] == errors[0], res
    for fragment in fragments:
        assert fragment in errors[0], res
    for raw in ("\x00", "\x1b", "\x07", "\x9b"):
        assert raw not in res.out + res.err, f"raw {raw!r} reached the terminal\n{res}"
    return errors[0]


def only_run(results: Path) -> Path:
    (run,) = [p for p in results.iterdir() if (p / "run.json").is_file()]
    return run


def assert_partial_and_untouched(run: Path, secret: Path | None = None) -> dict:
    """The run is partial with the entry failed as infrastructure; nothing of the attempt was stored as measured;
    the planted file's bytes are nowhere in the run."""
    doc = json.loads((run / "run.json").read_text())
    assert doc["status"] == "partial"
    (entry,) = doc["entries"]
    assert (entry["status"], entry["failure"]) == ("failed", "infrastructure"), entry
    assert "speed" not in entry and not (run / "timings" / f"{ENTRY}.npy").exists()
    if secret is not None:
        needle = np.float64(SECRET_VALUE).tobytes()
        for path in run.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert needle not in path.read_bytes(), f"{path} holds the planted file's values"
    return doc


def assert_resumes(box, run: Path, env: dict, *extra: str) -> None:
    """With the board honest again, --resume completes the run: every fed sample exactly once."""
    res = box.bench("run", "--resume", run.name, *extra, env=env, timeout=300)
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    doc = json.loads((run / "run.json").read_text())
    assert doc["status"] == "complete" and doc["entries"][0]["status"] == "ok"
    ids = [json.loads(ln)["sample_id"] for ln in (run / "samples" / f"{ENTRY}.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == N_IMAGES


# (issue item, corruption, fragments of the error line after "local worker: ", extra host environment)
CASES = [
    ("1", "timings-absolute", ("result.json field 'timings'", "secret.npy"), {}),
    ("1", "timings-dotdot", ("result.json field 'timings'", "../"), {}),
    ("1", "timings-symlink", ("timings.npy", "symbolic link"), {}),
    ("1", "timings-device", ("timings.npy", "not a regular file"), {}),
    ("1", "timings-fifo", ("timings.npy", "not a regular file"), {}),
    ("2", "missing-chunk", ("outputs 'sample_ids'", "samples sent did not come back"), {}),
    ("2", "duplicate-chunk", ("outputs/chunk-00001.npz 'sample_ids'", "twice"), {}),
    ("3", "not-zip", ("outputs/chunk-00000.npz", "not an npz (zip) archive"), {}),
    ("3", "unknown-id", ("outputs/chunk-00000.npz 'sample_ids'", "'intruder'", "did not send"), {}),
    ("3", "short-infer-ms", ("outputs/chunk-00000.npz 'infer_ms'",), {}),
    ("3", "junk-chunk", ("outputs/chunk-00001.npz", "over the limit of 1 MiB (BENCH_MAX_CHUNK_MB)"),
     {"BENCH_MAX_CHUNK_MB": "1"}),
    ("3", "timings-missing", ("timings.npy: missing",), {}),
    ("3", "timings-null", ("result.json field 'timings'",), {}),
    ("3", "timings-empty", ("timings.npy: is empty",), {}),
    ("3", "timings-nan", ("timings.npy", "not a finite number"), {}),
    ("3", "timings-inf", ("timings.npy", "not a finite number"), {}),
    ("3", "timings-object", ("timings.npy", "unreadable", "allow_pickle=False"), {}),
    ("4", "fingerprint", ("result.json field 'environment.hostname_sha256'",), {}),
    ("4", "backend", ("result.json field 'backend.requested'", "CUDAExecutionProvider"), {}),
    ("4", "entry", ("result.json field 'entry'", "blazeface--onnx-fp32"), {}),
    ("5", "reason-escape", ("\\x00\\x1b[2J\\x1b[31mall clear\\x1b[0m\\x07 \\x9b1m",), {}),
    ("7", "nested", ("result.json: is nested too deeply",), {}),
]
# onnxruntime's own device-id file (~/.cache/Microsoft/DeveloperTools): the runtime's write, not the harness's
ORT_HOME = "home/.cache"
RESUMED = {"timings-absolute", "missing-chunk", "not-zip", "fingerprint"}


@pytest.mark.parametrize("item, mode, fragments, extra", CASES, ids=[f"item{c[0]}-{c[1]}" for c in CASES])
def test_local_worker_corruption_is_one_infrastructure_line(box, built_packs, tiny, item, mode, fragments, extra):
    secret = plant_secret(box.root)
    config = box.root / "hostile.json"
    configure(config, mode, secret)
    env = local_env(config, built_packs, tiny, **extra)
    before = snapshot(box.root)
    res = box.bench(*RUN, env=env, timeout=300)
    line = assert_run_error(res, EXIT_UNAVAILABLE, "local worker: ", *fragments)
    assert "resume with bench run --resume" in line
    run = only_run(box.results)
    assert_partial_and_untouched(run, secret)
    assert_unchanged(before, snapshot(box.root), "results", "hostile.json", ORT_HOME)
    if mode in RESUMED:
        configure(config, "none")
        assert_resumes(box, run, env)


# -- the worker itself (items 6 and 7): `bench worker` in the sandbox --------------------------------------------
def _job(box) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from device_helpers import job_folder

    job_folder(box.root / "in", n=3, chunk_size=2, min_duration_s=0.01, max_duration_s=1.0)
    return box.root / "in" / "job.json"


def test_worker_never_follows_planted_symlinks(box):
    """Item 6: symlinks planted at the worker's old fixed temporary names (and at its output names) are neither
    followed nor written through; the files they point at stay as they were."""
    job = _job(box)
    out = box.root / "out"
    (out / "outputs").mkdir(parents=True)
    victims = {}
    for i, name in enumerate((".result.json.tmp", ".timings.npy.tmp", "outputs/.chunk-00000.npz.tmp",
                              "outputs/.chunk-00001.npz.tmp", "timings.npy")):
        victim = box.root / f"victim-{i}"
        victim.write_bytes(b"precious\n")
        (out / name).symlink_to(victim)
        victims[victim] = b"precious\n"
    res = box.bench("worker", job, "--out", out)
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    for victim, content in victims.items():
        assert victim.read_bytes() == content
    assert json.loads((out / "result.json").read_text())["status"] == "ok"
    assert not (out / "timings.npy").is_symlink()


def test_worker_refuses_an_outputs_folder_that_is_a_symlink(box):
    job = _job(box)
    outside = box.root / "outside"
    outside.mkdir()
    (box.root / "out").mkdir()
    (box.root / "out" / "outputs").symlink_to(outside)
    res = box.bench("worker", job, "--out", box.root / "out")
    assert_error(res, EXIT_USAGE, "outputs", "symbolic link")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d["samples"].__setitem__(0, [d["samples"][0][0], -1]), "row -1 is not an integer >= 0"),
    (lambda d: d.__setitem__("pool_rows", [-2] + d["pool_rows"]), "pool row -2 is not an integer >= 0"),
    (lambda d: d["samples"].__setitem__(1, [d["samples"][0][0], 1]), "a sample id is named twice"),
    # issue 21: the steady-state waits are bounded numbers; a job cannot park a board for a day or pass a string
    (lambda d: d["steady_state"].__setitem__("soak_s", 86400), "steady_state.soak_s must be a number of seconds"),
    (lambda d: d["steady_state"].__setitem__("cooldown_s", "300; rm -rf /"),
     "steady_state.cooldown_s must be a number of seconds"),
    (lambda d: d.__setitem__("steady_state", ["idle_s", 5]), "steady_state is not an object"),
], ids=["negative-sample-row", "negative-pool-row", "duplicate-sample-id", "soak-a-day", "cooldown-string",
        "steady-not-object"])
def test_job_file_rows_are_checked(box, change, fragment):
    """Item 7: a negative row would index another image from the end of the input array, silently."""
    job = _job(box)
    d = json.loads(job.read_text())
    change(d)
    job.write_text(json.dumps(d))
    res = box.bench("worker", job, "--out", box.root / "out")
    assert_error(res, EXIT_USAGE, str(job), "not a valid job", fragment)
    assert not (box.root / "out" / "result.json").exists()


def test_deeply_nested_job_file_is_one_line(box):
    job = _job(box)
    job.write_text("[" * 200000 + "]" * 200000)
    res = box.bench("worker", job, "--out", box.root / "out")
    assert_error(res, EXIT_USAGE, str(job), "nested too deeply")


# -- over real SSH: a loopback sshd board whose `python` is the hostile shim --------------------------------------
@pytest.fixture(scope="module")
def hostile_lab(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.remote.lab import SSHD, Lab

    import shutil

    if os.geteuid() != 0 or not SSHD.is_file() or shutil.which("ssh") is None:
        pytest.skip("needs root and Debian's openssh-server/openssh-client (.ci/run installs them)")
    lab = Lab(tmp_path_factory.mktemp("hostile-lab"))
    config = lab.root / "hostile.json"
    configure(config, "none")
    ssh_board(lab, "hostile", config)
    try:
        yield lab, config
    finally:
        lab.close()


SSH_CASES = [
    ("1", "timings-absolute", ("result.json field 'timings'",), {}),
    ("1", "junk-chunk", ("transfer: is over the limit of 1 MiB (BENCH_MAX_TRANSFER_MB)",),
     {"BENCH_MAX_TRANSFER_MB": "1"}),
    ("4", "fingerprint", ("result.json field 'environment.hostname_sha256'",), {}),
    ("5", "reason-escape", ("\\x00\\x1b[2J\\x1b[31mall clear",), {}),
]


@pytest.mark.remote
@pytest.mark.parametrize("item, mode, fragments, extra", SSH_CASES, ids=[f"item{c[0]}-{c[1]}" for c in SSH_CASES])
def test_ssh_board_corruption_is_one_infrastructure_line(box, built_packs, tiny, hostile_lab, item, mode, fragments,
                                                         extra):
    lab, config = hostile_lab
    secret = plant_secret(box.root)
    configure(config, mode, secret)
    env = {"BENCH_CACHE": str(built_packs), "BENCH_DATA": str(tiny), **extra}
    before = snapshot(box.root)
    res = box.bench(*RUN, "--device", "hostile", "--inventory", lab.inventory, env=env, timeout=300)
    assert_run_error(res, EXIT_UNAVAILABLE, "board hostile: ", *fragments)
    run = only_run(box.results)
    doc = assert_partial_and_untouched(run, secret)
    assert doc["entries"][0]["device"] == "hostile"
    assert_unchanged(before, snapshot(box.root), "results", ORT_HOME)


@pytest.mark.remote
def test_worker_killed_on_a_live_board_is_retryable(box, built_packs, tiny, hostile_lab):
    """Item 11: a worker SIGKILLed on a board that still answers: the reason says so (not an empty 'connection
    lost'), the run stays partial (exit 3), and --resume on the same board completes it."""
    lab, config = hostile_lab
    configure(config, "kill")
    env = {"BENCH_CACHE": str(built_packs), "BENCH_DATA": str(tiny)}
    res = box.bench(*RUN, "--device", "hostile", "--inventory", lab.inventory, env=env, timeout=300)
    assert_run_error(res, EXIT_UNAVAILABLE, "board hostile: worker killed on the board by SIGKILL")
    run = only_run(box.results)
    assert_partial_and_untouched(run)
    configure(config, "none")
    assert_resumes(box, run, env, "--device", "hostile", "--inventory", str(lab.inventory))
