"""LocalLauncher: a real `python -m harness worker` child; crash, timeout and silent exit become infrastructure
errors naming what happened; the worker never outlives its parent (issue 10: kill -9 of the parent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from device_helpers import job_folder
from harness.launchers.local import LocalLauncher
from harness.paths import REPO_ROOT


class ScriptLauncher(LocalLauncher):
    """The real launcher running a stand-in worker script, to provoke the failures a runtime can cause."""

    def __init__(self, script: str, **kw):
        super().__init__(**kw)
        self.script = script

    def command(self, job_file: Path, out_dir: Path, env=None) -> list[str]:
        return [self.python, "-c", self.script]


def test_launch_runs_the_worker_and_returns_its_result(tmp_path):
    job, _ = job_folder(tmp_path / "in")
    res = LocalLauncher(timeout_s=120).launch(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    assert res.exit_code == 0 and res.wall_s > 0 and len(res.chunks) == 3
    assert LocalLauncher().health() == (True, None) and LocalLauncher().describe()["kind"] == "local"


@pytest.mark.parametrize("script, reason", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "worker crashed with signal SIGSEGV"),
    ("import sys; print('libfoo.so: cannot open shared object', file=sys.stderr); sys.exit(3)",
     "worker exited with code 3 without a result: libfoo.so: cannot open shared object"),
])
def test_a_worker_that_dies_without_a_result_is_an_infrastructure_error(tmp_path, script, reason):
    job, _ = job_folder(tmp_path / "in")
    res = ScriptLauncher(script, timeout_s=60).launch(job, tmp_path / "in", tmp_path / "out")
    assert (res.status, res.reason) == ("infrastructure-error", reason)


def test_a_hung_worker_is_killed_at_the_timeout(tmp_path):
    job, _ = job_folder(tmp_path / "in")
    t0 = time.monotonic()
    res = ScriptLauncher("import time; time.sleep(60)", timeout_s=1.0).launch(job, tmp_path / "in", tmp_path / "out")
    assert (res.status, res.reason) == ("infrastructure-error", "timed out after 1 s")
    assert time.monotonic() - t0 < 10


def test_an_earlier_attempts_result_is_not_taken_for_this_one(tmp_path):
    job, _ = job_folder(tmp_path / "in")
    LocalLauncher(timeout_s=120).launch(job, tmp_path / "in", tmp_path / "out")
    res = ScriptLauncher("raise SystemExit(1)", timeout_s=60).launch(job, tmp_path / "in", tmp_path / "out")
    assert res.status == "infrastructure-error"


PARENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from device_helpers import job_folder
    from harness.launchers.local import LocalLauncher
    job, _ = job_folder(Path({folder!r}) / "in", n=3, chunk_size=1, min_duration_s=60, max_duration_s=120)
    LocalLauncher(timeout_s=300).launch(job, Path({folder!r}) / "in", Path({folder!r}) / "out")
""")


def _worker_of(parent: psutil.Process, timeout_s: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kids = [p for p in parent.children(recursive=True) if "worker" in " ".join(p.cmdline())]
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("the launcher started no worker")


def _dead_within(proc: psutil.Process, seconds: float) -> bool:
    """Gone or a zombie (dead, waiting for whichever reaper adopted it) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_kill_9_of_the_parent_leaves_no_worker_within_a_second(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    script = PARENT.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        worker = _worker_of(psutil.Process(proc.pid))
        outputs = tmp_path / "out" / "outputs"
        deadline = time.monotonic() + 60
        while len(list(outputs.glob("chunk-*.npz"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # accuracy pass done: the worker is now in its 60 s latency loop
        assert worker.is_running(), "the worker finished before the test could kill its parent"
        os.kill(proc.pid, signal.SIGKILL)
        assert _dead_within(worker, 1.0), f"worker {worker.pid} outlived its parent by more than 1 s"
        before = sorted((p.name, p.stat().st_size) for p in (tmp_path / "out").rglob("*"))
        time.sleep(0.3)
        assert sorted((p.name, p.stat().st_size) for p in (tmp_path / "out").rglob("*")) == before
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _bare_worker(tmp_path: Path, *flags: str) -> subprocess.Popen:
    job_folder(tmp_path / "in", min_duration_s=60, max_duration_s=120)
    return subprocess.Popen([sys.executable, "-m", "harness", "worker", str(tmp_path / "in" / "job.json"), "--out",
                             str(tmp_path / "out"), *flags], stdin=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))


def test_worker_exits_when_its_stdin_closes(tmp_path):
    proc = _bare_worker(tmp_path, "--watch-stdin")
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out" / "outputs").glob("chunk-*.npz")) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.stdin.close()
        assert proc.wait(timeout=2) == 1
        assert not (tmp_path / "out" / "result.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_worker_started_for_another_parent_exits_at_once(tmp_path):
    proc = _bare_worker(tmp_path, "--parent-pid", "1")
    try:
        assert proc.wait(timeout=30) == 1
        assert not (tmp_path / "out").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
