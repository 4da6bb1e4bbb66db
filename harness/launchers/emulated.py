"""EmulatedLauncher: the job runs on an emulated aarch64 board (harness/launchers/arm64_board.py) under qemu-user.

Selected by `bench run --target rpi --emulate arm64` (a Cortex-A72, the Raspberry Pi 4's core) or
`--emulate arm64:cortex-a76` (the Pi 5's, with the dot-product instructions int8 kernels use); `@bullseye` after
either (`--emulate arm64@bullseye`) runs the worker on Debian bullseye's Python 3.9 instead of bookworm's 3.11
(arm64_board.RECIPES). The job travels
exactly as to a real board: the model file, the input array and job.json are staged into a folder of plain files
(the local launcher's symlinks point at host paths that do not exist inside the board), mounted read-only at
/mnt/in; the worker (`python3 -m harness.device`,
the lean device side: numpy, psutil and the aarch64 runtime wheels) writes only to /mnt/out, which is the entry's
out folder on the host. Process handling (timeout, kill, crash -> infrastructure error, parent-death guards) is
LocalLauncher's: the command it runs is the board's unshare + chroot line, which execs down to the emulated worker.
A video job (`bench run --source FILE --emulate arm64`) travels the same way: its two model files and the video
file; PyAV comes from an overlay of aarch64 wheels (Arm64Board.ensure_extra, bound at /opt/bench/extra).

What an emulated run says about itself: the device fingerprint gains an "emulation" block (qemu-user X.Y, the
emulated core, the rootfs key), run.json's `launcher` records the same, and every latency is INVALID with the
reason "emulated" (`invalidate_timings`): the outputs are real aarch64 kernel outputs, the timings are qemu's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from harness import runtimes
from harness.errors import BenchError, UsageError
from harness.jobs import Job, JobResult, VideoJob
from harness.launchers.arm64_board import (CPUS, DEFAULT_CPU, DEFAULT_SUITE, EXTRA, IN_DIR, OUT_DIR, RECIPES, SITE, SRC,
                                           Arm64Board)
from harness.launchers.local import LocalLauncher
from harness.paths import REPO_ROOT

EMULATE_CHOICES = ("arm64",)
STAGED_IN = "board-in"


def check_target(target) -> None:
    """UsageError unless every backend of the profile is a CPU backend the emulated board has."""
    # CPU kernels only (no GPU, NPU or Edge TPU behind qemu-user): the runtime registry's CPU providers/delegates.
    bad = [f"{b.runtime}/{b.requested}" for b in target.backends if not runtimes.cpu_executed(b)]
    if bad:
        raise UsageError(f"target '{target.id}' cannot run on the emulated arm64 board: {', '.join(bad)} "
                         "need hardware qemu-user does not emulate (CPU backends only)")


class EmulatedLauncher(LocalLauncher):
    name = "emulated-arm64"

    def __init__(self, board: Arm64Board, *, timeout_s: float = 900.0, src: Path = REPO_ROOT,
                 extra_site: Path | None = None):
        super().__init__(timeout_s=timeout_s, python="python3")
        self.board, self.src = board, Path(src)
        self.extra_site = None if extra_site is None else Path(extra_site)  # Arm64Board.ensure_extra's folder
        self._binds: list[tuple] | None = None

    @property
    def where(self) -> str:
        return "emulated arm64 board"

    def health(self) -> tuple[bool, str | None]:
        """Builds or restores the board (minutes cold, seconds warm); not healthy when the tools are missing."""
        try:
            self.board.ensure()
        except BenchError as exc:
            return False, exc.message
        return True, None

    def launch(self, job: Job | VideoJob, inputs_dir: Path, out_dir: Path) -> JobResult:
        inputs_dir, out_dir = Path(inputs_dir), Path(out_dir)
        if not inputs_dir.is_dir():
            raise FileNotFoundError(f"EmulatedLauncher.launch: inputs folder {inputs_dir} does not exist")
        staged = stage_inputs(job, inputs_dir, out_dir.parent / STAGED_IN)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._binds = self.board.binds(src=self.src, in_dir=staged, out_dir=out_dir)
        if self.extra_site is not None:
            self._binds.append((self.extra_site, EXTRA, "ro"))
        result = super().launch(job, staged, out_dir)
        env = dict(result.environment or {})
        env["emulation"] = self.board.emulation
        return result.replace(environment=env)

    def command(self, job_file: Path, out_dir: Path, env: dict[str, str] | None = None) -> list[str]:
        """The board's `env -i` starts the worker from a clean environment: the job's variables go on its line."""
        argv = ["python3", "-m", "harness.device", f"{IN_DIR}/{Path(job_file).name}", "--out", OUT_DIR,
                "--parent-pid", str(os.getpid()), "--watch-stdin"]
        if self.extra_site is not None:
            env = {**(env or {}), "PYTHONPATH": f"{SITE}:{EXTRA}:{SRC}"}
        return self.board.command(argv, binds=self._binds or (), env=env or None)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "timeout_s": self.timeout_s, "emulation": self.board.emulation,
                "describe": self.board.describe()}


def stage_inputs(job: Job | VideoJob, inputs_dir: Path, staged: Path) -> Path:
    """Plain-file copies (hard links where the filesystem allows) of the files the job names, symlinks resolved,
    so the board sees them through one read-only bind mount."""
    staged.mkdir(parents=True, exist_ok=True)
    if isinstance(job, VideoJob):  # the two models and the video file (a stream URL is opened by the board)
        refs = [job.detector.file, job.embedder.file] + ([job.source] if job.source is not None else [])
    else:
        refs = [job.model, job.inputs.file]
    for ref in refs:
        src, dst = (inputs_dir / ref.name).resolve(), staged / ref.name
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return staged


def emulation_reason(emulation: dict) -> str:
    return (f"emulated ({emulation.get('by', 'qemu-user')}, -cpu {emulation.get('cpu', '?')}): timings are the "
            "emulator's, not the board's")


def invalidate_timings(doc: dict) -> int:
    """Mark every measured entry's latency INVALID with the reason "emulated" when the run's launcher emulated the
    board (run.json `launcher.emulation`); returns how many entries were marked. Idempotent (resume)."""
    emulation = (doc.get("launcher") or {}).get("emulation")
    if not emulation:
        return 0
    reason = emulation_reason(emulation)
    n = 0
    for e in doc.get("entries", []):
        speed = e.get("speed") or {}
        # the entry's inference, and the watchlist search it ran on the board (harness/search_job.py)
        searched = [size.get("validity") for rec in (speed.get("search") or {}).values()
                    for size in (rec.get("sizes") or [])]
        for validity in [speed.get("validity")] + searched:
            if validity is None:
                continue
            if reason not in validity["reasons"]:
                validity["reasons"].insert(0, reason)
            validity["status"] = "INVALID"
        n += speed.get("validity") is not None
    return n


def make_launcher(kind: str, target, cache: Path, *, timeout_s: float, log=print) -> EmulatedLauncher:
    """The launcher for `bench run --emulate KIND`: the board built or restored, or UnavailableError naming why."""
    from harness.errors import UnavailableError

    board_kind, _, suite = kind.partition("@")
    arch, _, cpu = board_kind.partition(":")
    if arch not in EMULATE_CHOICES or (cpu and cpu not in CPUS) or (suite and suite not in RECIPES):
        raise UsageError(f"--emulate {kind}: valid: {', '.join(EMULATE_CHOICES)}, optionally with the emulated core "
                         f"as arm64:CPU, CPU one of {', '.join(CPUS)} (default {DEFAULT_CPU}), and the root "
                         f"filesystem as @SUITE, one of {', '.join(RECIPES)} (default {DEFAULT_SUITE})")
    check_target(target)
    board = Arm64Board(Path(cache), recipe=RECIPES[suite or DEFAULT_SUITE], cpu=cpu or DEFAULT_CPU, log=log)
    launcher = EmulatedLauncher(board, timeout_s=timeout_s)
    ok, why = launcher.health()
    if not ok:
        raise UnavailableError(f"the emulated arm64 board is unavailable: {why}")
    log(f"board: aarch64, {launcher.board.describe()}; timings will be INVALID (emulated)")
    return launcher
