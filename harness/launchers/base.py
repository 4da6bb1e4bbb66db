"""The Launcher interface: how a `Job` reaches a device and its `JobResult` comes back.

One axis of the harness, as in optimum-benchmark (`Launcher.launch(worker, args) -> report`): the run plans and
scores; a launcher only moves a job and its files to where it runs, runs `bench worker`, and brings the output
folder back. `LocalLauncher` (harness/launchers/local.py) is a child process on this machine; an SSH launcher (a
board on the network) or an emulated board implements the same three methods.

Contract for every implementation:
- `launch` never raises for a failure of the job or of the device: it returns a JobResult whose status says
  which kind (test-error: the model or backend failed; infrastructure-error: the worker crashed, timed out,
  vanished, or the transfer failed). It raises only for bugs in the caller (a missing inputs folder).
- After `launch` returns, `out_dir` on this machine holds what the worker wrote (result.json, outputs/, timings),
  including the raw-output chunks of a worker that died, so the host can resume after them.
- No process the launcher started outlives the call, nor the host process (a killed host leaves nothing behind).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from harness.jobs import Job, JobResult


class Launcher(abc.ABC):
    """Run a Job somewhere and return its JobResult; see the module docstring for the contract."""

    name: str = ""

    @abc.abstractmethod
    def launch(self, job: Job, inputs_dir: Path, out_dir: Path) -> JobResult:
        """Run `job` with the files it names (in `inputs_dir`); the worker's output lands in `out_dir`."""

    def health(self) -> tuple[bool, str | None]:
        """(reachable and able to run a worker, one-line reason if not), checked before a run starts.

        The local child process is always reachable; a remote launcher checks the connection and the worker's
        Python environment here, so an unreachable board is one clear error, not one failed entry per variant.
        """
        return True, None

    @property
    def where(self) -> str:
        """How an error about what this launcher's device sent back names the device ("board NAME", "local worker")."""
        return f"{self.name} worker"

    def describe(self) -> dict[str, Any]:
        """What run.json records under `launcher`: the kind and where jobs ran (no secrets, no host keys)."""
        return {"kind": self.name}
