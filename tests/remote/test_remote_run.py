"""`bench run --device`: jobs on a board over SSH (Debian's sshd on loopback, tests/remote/lab.py), scored here.

Cases from issue 12: a remote run equals the local run of the same packs and inputs (bit-identical outputs: same
ISA, same wheels); a second run copies zero bytes of packs; a board without the runtime fails the health check
with exit 3 before anything is copied; a changed host key is refused; a board killed mid-entry leaves a resumable
run whose brought-back samples are kept, and --resume finishes it on another board.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import EXIT_UNAVAILABLE
from harness.paths import REPO_ROOT
from tests.remote.lab import wait_for_first_chunk

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENTRY = "gender-dlib--onnx-fp32"
RUN = ["run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset", "london-frl",
       "--threads", "1", "--min-count", "20", "--bootstrap", "50", "--no-build"]


def bench(results: Path, cache: Path, data: Path, *args: str, wait: bool = True):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), BENCH_CACHE=str(cache), BENCH_RESULTS=str(results),
               BENCH_DATA=str(data))
    cmd = [sys.executable, "-m", "harness", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "samples" / f"{ENTRY}.jsonl").read_text().splitlines()
    return sorted(({k: v for k, v in json.loads(ln).items() if not k.endswith("_ms")} for ln in lines if ln.strip()),
                  key=lambda r: r["sample_id"])


@pytest.fixture(scope="module")
def boards(lab):
    lab.add("board-a")
    lab.add("board-b")
    lab.add("board-lean", runtimes=())  # numpy + psutil + harness, no runtime
    return lab


@pytest.fixture(scope="module")
def local_run(built_packs, tiny_data, tmp_path_factory):
    results = tmp_path_factory.mktemp("results-local")
    proc = bench(results, built_packs, tiny_data, *RUN, "--min-duration", "0.2")
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_remote_run_equals_local_and_second_run_copies_no_packs(boards, local_run, built_packs, tiny_data, tmp_path):
    inv = ["--device", "board-a", "--inventory", str(boards.inventory), "--min-duration", "0.2"]
    first = bench(tmp_path, built_packs, tiny_data, *RUN, *inv)
    assert first.returncode == 0, first.stderr
    remote = Path(first.stdout.strip().splitlines()[-1])
    doc, local = run_json(remote), run_json(local_run)

    # Bit-identical raw outputs (same ISA, same wheels) -> identical per-sample records and metrics.
    assert records(remote) == records(local_run)
    (e_remote,), (e_local,) = doc["entries"], local["entries"]
    assert e_remote["status"] == "ok" and e_remote["device"] == "board-a"
    assert e_remote["metrics"]["rates"] == e_local["metrics"]["rates"]
    # Where it ran is recorded: the launcher, the board's health report and its own fingerprint.
    assert doc["launcher"]["kind"] == "ssh" and doc["launcher"]["board"]["name"] == "board-a"
    assert doc["launcher"]["health"]["machine"] and doc["device_environment"]["python"]
    assert doc["launcher"]["sync"]["uploaded_files"] <= 2  # model + inputs (fewer if an earlier test sent them)
    # every command of the entry went through one command relay: the board user's login shell ran once for them
    assert doc["launcher"]["relay"] == {"starts": 1}

    second = bench(tmp_path, built_packs, tiny_data, *RUN, *inv)
    assert second.returncode == 0, second.stderr
    sync = run_json(Path(second.stdout.strip().splitlines()[-1]))["launcher"]["sync"]
    assert sync == {"uploaded_files": 0, "uploaded_bytes": 0, "cas_hits": 2}
    cas = boards.boards["board-a"].workdir / "cas"
    assert len(list(cas.iterdir())) == 2  # content-addressed: one file per sha256, nothing else

    # The job starts as if the board had its files (no listing: one command fewer); a board
    # whose cas/ lost one says so before anything is made, gets that one file, and the job runs.
    lost = sorted(cas.iterdir())[0]
    lost.unlink()
    third = bench(tmp_path, built_packs, tiny_data, *RUN, *inv)
    assert third.returncode == 0, third.stderr
    doc3 = run_json(Path(third.stdout.strip().splitlines()[-1]))
    assert doc3["launcher"]["sync"] | {"uploaded_bytes": 0} == {"uploaded_files": 1, "cas_hits": 1,
                                                                  "uploaded_bytes": 0}
    assert doc3["launcher"]["relay"] == {"starts": 1}  # the listing and the upload went through it too
    assert lost.is_file() and records(Path(third.stdout.strip().splitlines()[-1])) == records(local_run)


def test_board_without_the_runtime_is_exit_3_before_anything_is_copied(boards, built_packs, tiny_data, tmp_path):
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--device", "board-lean", "--inventory",
                 str(boards.inventory))
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "board-lean" in err and "health check failed" in err and "onnxruntime" in err
    assert not (boards.boards["board-lean"].workdir / "cas").exists()
    assert not any(tmp_path.glob("*/run.json"))  # no run was started


def test_changed_host_key_is_refused(boards, built_packs, tiny_data, tmp_path):
    from tests.remote.lab import keygen

    other = keygen(tmp_path / "impostor")
    a = boards.boards["board-a"]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{a.port} {' '.join(other.split()[:2])}\n")
    inventory = tmp_path / "boards.toml"
    inventory.write_text(boards.inventory.read_text().replace(str(boards.known_hosts), str(known)))
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--device", "board-a", "--inventory", str(inventory))
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert "Host key verification failed" in " ".join(proc.stderr.split())


def test_board_killed_mid_entry_then_resumed_on_another_board(boards, local_run, built_packs, tiny_data, tmp_path):
    a = boards.boards["board-a"]
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "8", "--device", "board-a",
                 "--inventory", str(boards.inventory), wait=False)
    try:
        assert wait_for_first_chunk(proc, tmp_path, ENTRY), proc.communicate()[1]
        a.kill()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if a.proc is None:
            a.start()
    assert proc.returncode == EXIT_UNAVAILABLE, err
    assert "was lost during" in " ".join(err.split())
    (run_dir,) = [p.parent for p in tmp_path.glob("*/run.json")]
    doc = run_json(run_dir)
    assert doc["status"] == "partial"
    (entry,) = doc["entries"]
    assert entry["status"] == "failed" and entry["failure"] == "infrastructure" and entry["device"] == "board-a"
    assert len(records(run_dir)) == 24  # everything brought back before the board died is kept

    resumed = bench(tmp_path, built_packs, tiny_data, "run", "--resume", run_dir.name, "--device", "board-b",
                    "--inventory", str(boards.inventory))
    assert resumed.returncode == 0, resumed.stderr
    doc = run_json(run_dir)
    assert doc["status"] == "complete"
    (entry,) = doc["entries"]
    assert entry["status"] == "ok" and entry["device"] == "board-b"
    assert records(run_dir) == records(local_run)  # no sample lost, none twice
