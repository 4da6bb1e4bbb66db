"""LocalLauncher: the job runs in a child process on this machine (`python -m harness worker JOB --out DIR`).

A subprocess, not multiprocessing: the child is exactly what a device runs (a fresh interpreter executing the
`bench worker` entry point, importing only the device side), with no runtime state inherited through fork and
nothing pickled. The cost is an interpreter start (~0.1 s), negligible next to loading a model.

The child dies with this process (harness/device/lifeline.py: PR_SET_PDEATHSIG and a getppid() watch via
--parent-pid, and an EOF watch on the stdin pipe this launcher holds via --watch-stdin), is killed after
`timeout_s`, and a crash becomes an infrastructure-error JobResult naming the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.jobs import RESULT_FILE, Job, JobResult, blas_environment
from harness.launchers.base import Launcher
from harness.launchers.trust import infrastructure_result, outcome

_KILL_GRACE_S = 5.0
_STDERR_FILE = "worker.stderr"


def signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, *, timeout_s: float = 900.0, python: str = sys.executable):
        self.timeout_s = timeout_s
        self.python = python
        self._environment: dict[str, Any] | None = None

    def command(self, job_file: Path, out_dir: Path, env: dict[str, str] | None = None) -> list[str]:
        """The worker's command line; `env` (the job's own variables, jobs.blas_environment) is set by launch() in
        the child's environment here, and by a launcher whose worker does not inherit it (emulated) on the line."""
        return [self.python, "-m", "harness", "worker", str(job_file), "--out", str(out_dir),
                "--parent-pid", str(os.getpid()), "--watch-stdin"]

    def launch(self, job: Job, inputs_dir: Path, out_dir: Path) -> JobResult:
        inputs_dir, out_dir = Path(inputs_dir), Path(out_dir)
        if not inputs_dir.is_dir():
            raise FileNotFoundError(f"LocalLauncher.launch: inputs folder {inputs_dir} does not exist")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULT_FILE).unlink(missing_ok=True)  # a result from an earlier attempt must not be mistaken
        job_file = job.write(inputs_dir)
        job_env = blas_environment(job)  # a search job's --threads bounds its BLAS, set before numpy loads
        start = time.perf_counter()
        with open(out_dir / _STDERR_FILE, "wb") as err:
            proc = subprocess.Popen(self.command(job_file, out_dir, job_env), stdin=subprocess.PIPE, stdout=err,
                                    stderr=err, cwd=inputs_dir, env=_child_env() | job_env)
            try:
                code = proc.wait(timeout=self.timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(_KILL_GRACE_S)
                timed_out = True
            except BaseException:  # Ctrl-C / SIGTERM of the host: the worker goes with it, never outlives it
                proc.kill()
                proc.wait(_KILL_GRACE_S)
                raise
            finally:
                if proc.stdin:
                    proc.stdin.close()
        wall_s = round(time.perf_counter() - start, 3)
        if timed_out:
            return infrastructure_result(job, out_dir, f"timed out after {self.timeout_s:g} s", code, wall_s)
        if code < 0:
            why = f"worker crashed with signal {signal_name(code)}"
        else:
            last = _last_line(out_dir / _STDERR_FILE)
            why = f"worker exited with code {code} without a result" + (f": {last}" if last else "")
        return outcome(job, out_dir, where=self.where, exit_code=code, wall_s=wall_s, fallback=why,
                       environment=self.expected_environment())

    @property
    def where(self) -> str:
        """How errors name the device: the local worker."""
        return "local worker"

    def expected_environment(self) -> dict[str, Any] | None:
        """This machine's fingerprint, which a worker run with this same interpreter must repeat (trust.py checks
        it); None for another interpreter (an emulated board answers for itself)."""
        if self.python != sys.executable:
            return None
        if self._environment is None:
            from harness.environment import fingerprint

            self._environment = fingerprint()
        return self._environment

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "python": self.python, "timeout_s": self.timeout_s}


def _child_env() -> dict[str, str]:
    """This environment, with this checkout's harness first on the path (so the child runs the same code)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _last_line(path: Path) -> str | None:
    """The worker's last stderr line (the host's own capture file), escaped: it may carry anything the worker printed."""
    from harness.names import shown

    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 8192))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return shown(lines[-1].strip()) if lines else None
