"""SSHLauncher: run a job on a board over SSH; measure on the board, score on the host.

Client: the OpenSSH binary (`ssh`), not a Python SSH library. Why (docs/remote.md has the long form):
- it is what a lab already trusts and configures: ~/.ssh/config, agents, hardware keys, ProxyJump, known_hosts
  (labgrid drives the same binary, with ControlMaster, for the same reason);
- ControlMaster multiplexes every command of a run over one authenticated connection (one handshake per run, each
  later command costs a channel, ~10 ms), and the master is our child, killed with us (PR_SET_PDEATHSIG);
- no password can be passed at all: BatchMode=yes turns every prompt into a failure, and host-key checking is
  StrictHostKeyChecking=yes (an unknown or changed host key is refused, never accepted).
asyncssh would add an in-process server for tests, but the tests here run Debian's real sshd instead.

What happens for one job (harness/launchers/base.py has the contract):
1. content-addressed sync: the model file and the input array are stored on the board as
   <workdir>/cas/<sha256> (uploaded to a temporary name, checked with sha256sum, renamed). The job is first
   started as if the board had them: its command checks that both are in cas/ before it makes anything and exits
   CAS_MISSING when one is not; only then is cas/ listed and what is missing copied, and the job started again. So a
   file the board already has costs no command and zero bytes; `sync_stats` counts what was sent and what was found;
2. the job folder <workdir>/jobs/<id>/in holds job.json and symlinks into cas/; the worker runs there with
   `--watch-stdin` (a pipe the board's command relay holds: if the connection drops, the worker exits);
3. while it runs, finished raw-output chunks (atomically renamed on the board) are brought back every
   `poll_s` seconds, each into out_dir/outputs by write-then-rename, so a board that dies mid-entry loses at most
   the chunk being written; at the end result.json and timings.npy follow the same way.
Every command of a job goes through the command relay (launchers/relay.py: one process per connection, so the board
user's login shell and its rc run once, not per command; docs/remote.md, "The board account").
An SSH failure (exit 255, or the relay's connection lost), a worker killed or vanished, a full disk or a failed
transfer is an infrastructure error; a worker that ran and reported an error is a test error (its own result.json
says so).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.errors import InfrastructureError, UnavailableError
from harness.jobs import OUTPUTS_DIR, RESULT_FILE, Job, JobResult, blas_environment
from harness.launchers.base import Launcher
from harness.launchers.relay import Relay
from harness.launchers.trust import (chunk_names, discard, infrastructure_result, outcome, read_timings,
                                     receive_tar)

# The job command's own exit status when a file it needs is not in the board's cas/ (nothing made yet): the host
# syncs and starts it again. Not a status the worker exits with (harness/errors.py: 0-5, 10-12, 130; a signal is
# 128+N).
CAS_MISSING = 97
SSH_FAILED = 255          # ssh's own exit status when the connection (not the remote command) failed
DEFAULT_WORKDIR = ".cache/edge-fair-bench"   # relative to the board user's home: the same cache root as a host
_STDERR_FILE = "worker.stderr"


@dataclass(frozen=True)
class Board:
    """Where a board is and how to reach it. No secrets: keys come from the agent, ~/.ssh or `identity_file`."""

    name: str
    host: str
    user: str | None = None
    port: int = 22
    python: str = "python3"            # the board's lean device install (pip install '.[device-litert]' etc.)
    identity_file: str | None = None
    known_hosts: str | None = None     # a UserKnownHostsFile for the lab's boards (default: ~/.ssh/known_hosts)
    workdir: str = DEFAULT_WORKDIR
    tags: Mapping[str, str] = field(default_factory=dict)
    connect_timeout_s: int = 10
    keepalive_s: int = 5               # ServerAliveInterval; 3 unanswered -> the connection is declared dead
    meter: Any = None                  # a HostMeterSpec: a power meter read on the host (launchers/host_meter.py)

    @property
    def address(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        d = {"name": self.name, "address": self.address, "python": self.python, "tags": dict(self.tags)}
        if self.meter is not None:  # its command's name only: the arguments may hold secrets
            d["meter"] = {"runs_on": "host", "command": self.meter.name, "interval_s": self.meter.interval_s}
            if self.meter.sigrok is not None:  # a labgrid place's sigrok resource (launchers/sigrok_meter.py)
                d["meter"].update(interval_s=None, labgrid=self.meter.sigrok.describe())
        return d


def parse_address(text: str) -> tuple[str | None, str, int]:
    """user@host[:port], host[:port], user@[v6addr]:port -> (user, host, port)."""
    user, _, rest = text.rpartition("@")
    port = 22
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, port_s = rest.split(":")
        port = int(port_s)
    else:
        host = rest
    if not host:
        raise ValueError(f"no host in {text!r}")
    return (user or None), host, port


class SSH:
    """The ssh command line for one board, multiplexed over a ControlMaster this process owns."""

    def __init__(self, board: Board):
        self.board = board
        self._dir = tempfile.mkdtemp(prefix="bench-ssh-")
        self.control_path = os.path.join(self._dir, "cm")
        self._master: subprocess.Popen | None = None

    def options(self) -> list[str]:
        b = self.board
        opts = ["-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={b.connect_timeout_s}",
                "-o", f"ServerAliveInterval={b.keepalive_s}", "-o", "ServerAliveCountMax=3",
                "-o", "LogLevel=ERROR", "-o", f"ControlPath={self.control_path}", "-p", str(b.port)]
        if b.user:
            opts += ["-l", b.user]
        if b.identity_file:
            opts += ["-o", f"IdentityFile={os.path.expanduser(b.identity_file)}", "-o", "IdentitiesOnly=yes"]
        if b.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={os.path.expanduser(b.known_hosts)}"]
        return opts

    def argv(self, remote_command: str) -> list[str]:
        return ["ssh", *self.options(), "-o", "ControlMaster=no", self.board.host, remote_command]

    def open(self) -> None:
        """Start the ControlMaster (our child, killed with us) and wait until it is authenticated."""
        if self._master is not None and self._master.poll() is None:
            return
        from harness.device.lifeline import set_parent_death_signal

        self._master = subprocess.Popen(["ssh", *self.options(), "-o", "ControlMaster=yes",
                                         "-o", "ControlPersist=no", "-N", self.board.host],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        preexec_fn=set_parent_death_signal)
        deadline = time.monotonic() + self.board.connect_timeout_s + 5
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                err = self._master.stderr.read().decode(errors="replace") if self._master.stderr else ""
                self._master = None
                raise ConnectionError(_last(err) or "ssh exited")
            if os.path.exists(self.control_path):
                return
            time.sleep(0.02)
        self.close()
        raise ConnectionError(f"no connection after {self.board.connect_timeout_s} s")

    def run(self, remote_command: str, *, input: bytes | None = None, timeout: float = 120.0,
            stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.argv(remote_command), input=input, stdout=stdout, stderr=subprocess.PIPE,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], SSH_FAILED, b"", f"timed out after {timeout:g} s".encode())

    def close(self) -> None:
        if self._master is not None:
            self._master.kill()
            self._master.wait()
            self._master = None
        try:
            os.unlink(self.control_path)
        except OSError:
            pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass


def _last(text: str | bytes | None) -> str:
    """The last non-empty line of what a board printed, escaped (harness.names.shown): a board's bytes are data."""
    from harness.names import shown

    if isinstance(text, bytes):
        text = text[-8192:].decode(errors="replace")
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return shown(lines[-1]) if lines else ""


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class RemoteFailure(Exception):
    """The board or the connection failed (an infrastructure error), with a one-line reason."""


class SSHLauncher(Launcher):
    name = "ssh"

    def __init__(self, board: Board, *, timeout_s: float = 900.0, poll_s: float = 5.0):
        self.board = board
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.ssh = SSH(board)
        self.sync_stats = {"uploaded_files": 0, "uploaded_bytes": 0, "cas_hits": 0}
        self.health_report: dict[str, Any] | None = None
        self.provision_record: dict[str, Any] | None = None  # the board's, when provisioned (launchers/provision.py)
        self._q = shlex.quote
        # Every command of a job goes through one relay per connection (launchers/relay.py): the board user's login
        # shell and its rc run once, not per command. The health check (once per connection; it also measures what
        # a plain command costs) and provisioning stay plain ssh commands.
        self.relay = Relay(self.ssh, lambda: self.board.python, self.where)

    def run(self, command: str, *, input: bytes | None = None, timeout: float = 120.0,
            consume=None) -> subprocess.CompletedProcess:
        """`command` on the board through the relay; a lost relay or connection is exit SSH_FAILED, as over ssh."""
        try:
            return self.relay.run(command, input=input, timeout=timeout, consume=consume)
        except ConnectionError as exc:
            return subprocess.CompletedProcess(command, SSH_FAILED, b"", str(exc).encode())

    # -- health ------------------------------------------------------------------------------------------------
    def check(self, target, variants: tuple[str, ...] = ()) -> dict[str, Any]:
        """Connect and run harness/device/health.py on the board against `target` (a TargetProfile), counting
        only the backends that serve `variants` (all of them when empty).

        Returns the board's report (target_status's row shape, plus versions, disk, temperature, throttling).
        Raises UnavailableError (exit 3) with the reason when the board cannot run this profile's jobs: nothing
        has been copied to the board at that point.
        """
        where = f"board {self.board.name} ({self.board.address})"
        try:
            self.ssh.open()
        except ConnectionError as exc:
            raise UnavailableError(f"{where}: unreachable: {exc}") from None
        profile = {"board": dict(target.board), "telemetry": list(target.telemetry),
                   "backends": [{"runtime": b.runtime, "variants": list(b.variants), "provider": b.provider,
                                 "delegate": b.delegate, "delegate_library": b.delegate_library}
                                for b in target.backends
                                if not variants or set(variants) & set(b.variants)],
                   "workdir": self.board.workdir}
        command_s = self.command_cost()
        cmd = f"{self._q(self.board.python)} -m harness.device.health {self._q(json.dumps(profile))}"
        proc = self.ssh.run(cmd, timeout=60)
        if proc.returncode == SSH_FAILED:
            raise UnavailableError(f"{where}: unreachable: {_last(proc.stderr) or 'ssh failed'}")
        if proc.returncode != 0:
            raise UnavailableError(f"{where}: the lean device install is missing or broken ({self.board.python}: "
                                   f"{_last(proc.stderr) or f'exit {proc.returncode}'}); install it with "
                                   f"bench device provision {self.board.name} --target {target.id} (or by hand: "
                                   "pip install '.[device-litert]' or '.[device-onnx]')")
        from harness.errors import InfrastructureError
        from harness.launchers.trust import parse_health

        try:
            report = parse_health(proc.stdout, where=where)
        except InfrastructureError as exc:
            raise UnavailableError(f"health check printed no usable report: {exc.message}") from None
        report["ssh_command_s"] = command_s
        self.health_report = report
        from harness.jobs import SCHEMA_VERSION

        problems = []
        if report.get("job_schema_version") != SCHEMA_VERSION:
            problems.append(f"its harness reads job schema {report.get('job_schema_version')}, this host writes "
                            f"{SCHEMA_VERSION} (install the same harness version on both)")
        if report.get("available") is not True:
            problems.append(str(report.get("reason") or "no backend of the profile is available"))
        problems += [str(p) for p in report.get("problems") or [] if p]
        if problems:
            raise UnavailableError(f"{where}: health check failed for target '{target.id}': {'; '.join(problems)}")
        return report

    def command_cost(self, n: int = 3) -> float | None:
        """Median seconds of one trivial command (`true`) over the open ControlMaster: what every remote step pays.

        sshd runs each command through the board user's login shell, and bash started by sshd reads ~/.bashrc
        even when not interactive (Debian builds it with SSH_SOURCE_BASHRC), so a heavy rc is paid per command,
        several times per entry (docs/remote.md, "The board account"). None when the command fails."""
        walls = []
        for _ in range(n):
            t0 = time.perf_counter()
            if self.ssh.run("true", timeout=30).returncode != 0:
                return None
            walls.append(time.perf_counter() - t0)
        return round(sorted(walls)[len(walls) // 2], 4)

    def health(self) -> tuple[bool, str | None]:
        if self.health_report is None:
            return False, "not checked yet (SSHLauncher.check(target))"
        return True, None

    def describe(self) -> dict[str, Any]:
        h = self.health_report or {}
        d = {"kind": self.name, "board": self.board.describe(), "timeout_s": self.timeout_s,
             "sync": dict(self.sync_stats),
             "relay": {"starts": self.relay.starts},  # how often the board user's login shell ran for the jobs
             "health": {k: h.get(k) for k in ("device_model", "machine", "python", "harness_version",
                                              "disk_free_mb", "temperature_c", "throttled", "ssh_command_s")}}
        if h:  # the board's int8 kernel path, derived here from the flags it reported (harness/kernel_path.py)
            from harness.kernel_path import of_environment

            d["health"]["kernel_path"] = of_environment(h.get("fingerprint"))["int8"]
        if self.provision_record:  # the board runs the venv `bench device provision` made
            d["provision"] = {k: self.provision_record.get(k) for k in (
                "harness_version", "wheel", "wheel_sha256", "extra", "target", "runtime", "python", "platform",
                "time")}
        if h.get("emulation"):  # an emulated board (arm64_exec.py): every timing INVALID (emulated.invalidate_timings)
            d["emulation"] = h["emulation"]
        return d

    # -- content-addressed sync --------------------------------------------------------------------------------
    def _cas(self) -> str:
        return f"{self.board.workdir}/cas"

    def sync(self, files: list[tuple[Path, str]]) -> None:
        """Each (local path, sha256) present on the board as cas/<sha256>; copies only what is missing."""
        q, cas = self._q, self._cas()
        listing = self.run(f"mkdir -p {q(cas)} && ls -1 {q(cas)}", timeout=60)
        if listing.returncode != 0:
            raise RemoteFailure(f"cannot list {cas} on the board: {_last(listing.stderr)}")
        present = set(listing.stdout.decode().split())
        for path, sha in files:
            if sha in present:
                self.sync_stats["cas_hits"] += 1
                continue
            part = f"{cas}/.{sha}.part"
            data = Path(path).read_bytes()
            proc = self.run(f"cat > {q(part)} && echo {sha}' '{q(part)} | sha256sum -c --quiet - && "
                                f"mv -f {q(part)} {q(cas + '/' + sha)} || {{ rm -f {q(part)}; exit 1; }}",
                                input=data, timeout=max(60.0, len(data) / 1e6))
            if proc.returncode != 0:
                raise RemoteFailure(f"copying {Path(path).name} to the board failed: "
                                    f"{_last(proc.stderr) or f'exit {proc.returncode}'}")
            present.add(sha)
            self.sync_stats["uploaded_files"] += 1
            self.sync_stats["uploaded_bytes"] += len(data)

    # -- launch ------------------------------------------------------------------------------------------------
    def launch(self, job: Job, inputs_dir: Path, out_dir: Path) -> JobResult:
        inputs_dir, out_dir = Path(inputs_dir), Path(out_dir)
        if not inputs_dir.is_dir():
            raise FileNotFoundError(f"SSHLauncher.launch: inputs folder {inputs_dir} does not exist")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULT_FILE).unlink(missing_ok=True)
        start = time.perf_counter()
        remote = f"{self.board.workdir}/jobs/{job.entry}-{uuid.uuid4().hex[:12]}"
        code: int | None = None
        meter = None
        if self.board.meter is not None:  # the host reads this board's meter (harness/launchers/host_meter.py)
            from harness.launchers.host_meter import HostMeter

            meter = HostMeter(self.board.meter)
        sent = meter.board_job(job) if meter is not None else job

        def failed(result: JobResult) -> JobResult:  # a failed job keeps what the host's meter saw
            return meter.apply_failed(result) if meter is not None and meter.began else result

        try:
            self.ssh.open()
            files = [(inputs_dir / ref.name, ref.sha256) for ref in (job.model, job.inputs.file)]
            if meter is not None:
                meter.start(self.relay)
            try:
                code, why = self._run_worker(sent, remote, out_dir)
                if code == CAS_MISSING and why is None:  # the board lacks a file: copy what is missing, start again
                    self.sync(files)
                    code, why = self._run_worker(sent, remote, out_dir)
                elif why is None:
                    self.sync_stats["cas_hits"] += len(files)
                if code == CAS_MISSING and why is None:
                    raise RemoteFailure(f"the board's {self._cas()} lost a file of this job right after it was "
                                        "copied there")
            finally:
                if meter is not None:
                    meter.stop()
            self._fetch(remote, out_dir, final=True)
        except InfrastructureError as exc:
            self.run(f"rm -rf {self._q(remote)}", timeout=30)
            discard(out_dir)  # what this attempt sent is not trusted; the samples run again on --resume
            return failed(self._infra(job, out_dir, exc.message, code, start))
        except (RemoteFailure, ConnectionError, OSError, tarfile.TarError) as exc:
            self.run(f"rm -rf {self._q(remote)}", timeout=30)
            return failed(self._infra(job, out_dir, f"{self.where}: {exc}", code, start))
        wall_s = round(time.perf_counter() - start, 3)
        if why is not None:  # a result.json left by a worker that timed out or was killed is not its answer
            return failed(self._infra(job, out_dir, f"{self.where}: {why}", code, start))
        h = self.health_report or {}
        result = outcome(sent, out_dir, where=self.where, exit_code=code, wall_s=wall_s,
                         fallback=f"{self.where}: worker exited with code {code} without a result",
                         environment=h.get("fingerprint") if isinstance(h.get("fingerprint"), dict) else None,
                         health=h)
        if meter is not None and not result.ok:
            return failed(result)
        if meter is not None and result.ok and result.timings:
            try:
                timings = read_timings(out_dir, result, where=self.where)
            except InfrastructureError as exc:
                discard(out_dir)
                return failed(self._infra(job, out_dir, exc.message, code, start))
            result = meter.apply(result, job, int(len(timings)))
        return result

    @property
    def where(self) -> str:
        """How errors name the device: the board."""
        return f"board {self.board.name}"

    def _stage_command(self, job: Job, remote: str) -> str:
        """Shell that makes the job folder: symlinks into cas/ and job.json (base64 on the command line, because
        the session's stdin is the worker's lifeline); one round trip with the worker's own start."""
        import base64

        q, cas = self._q, "../../../cas"
        refs = (job.model, job.inputs.file)
        present = " && ".join(f"test -f {q(self._cas() + '/' + ref.sha256)}" for ref in refs)
        links = " && ".join(f"ln -s {q(cas + '/' + ref.sha256)} {q(remote + '/in/' + ref.name)}" for ref in refs)
        blob = base64.b64encode(job.to_json().encode()).decode()
        return (f"{{ {present} || exit {CAS_MISSING}; }} && mkdir -p {q(remote + '/in')} {q(remote + '/out')} && "
                f"{links} && echo {blob} | base64 -d > {q(remote + '/in/job.json')}")

    def worker_command(self, job: Job, remote: str) -> str:
        """The remote command line that stages the job and runs the worker on the board."""
        q = self._q
        # No exec (and a command after the worker, so no shell execs it as its last command): the board's shell
        # outlives the worker to pass on how it ended. A worker killed by signal N makes $? 128+N (POSIX 2.8.2),
        # which the shell exits with and ssh returns as is; 255 then means only the connection.
        # A search job's --threads bounds the board's BLAS: its variables prefix the worker's command, so they are set
        # before numpy loads there (jobs.blas_environment); names and digits only, quoted all the same.
        job_env = "".join(f"{k}={q(v)} " for k, v in blas_environment(job).items())
        return (f"{self._stage_command(job, remote)} && cd {q(remote + '/in')} && {{ {job_env}{q(self.board.python)} "
                "-m harness worker job.json --out ../out --watch-stdin; rc=$?; exit $rc; }")

    def _run_worker(self, job: Job, remote: str, out_dir: Path) -> tuple[int | None, str | None]:
        """Stage and run the worker; bring chunks back while it runs. (exit code, infrastructure reason or None).

        The worker is a background job of the relay, its stdin the relay's pipe: if the connection drops or this
        process dies, the relay reads EOF and closes it, and the worker (--watch-stdin) exits."""
        cmd = self.worker_command(job, remote)
        deadline = time.monotonic() + self.timeout_s
        with open(out_dir / _STDERR_FILE, "wb") as err:
            def output(data: bytes) -> None:
                err.write(data)
                err.flush()

            try:
                handle = self.relay.spawn(cmd)
                while True:
                    code = self.relay.wait(handle, self.poll_s, output)
                    if code is not None:
                        break
                    if time.monotonic() > deadline:
                        self.relay.kill(handle, output)
                        return None, f"timed out after {self.timeout_s:g} s"
                    self._fetch(remote, out_dir, final=False)
            except ConnectionError as exc:
                output(f"{exc}\n".encode())
                code = SSH_FAILED
            except BaseException:
                self.relay.close()  # the relay reads EOF and cuts the worker's lifeline
                raise
        if code == SSH_FAILED:
            last = _last((out_dir / _STDERR_FILE).read_bytes())
            if self.ssh.run("true", timeout=30).returncode == 0:  # the board still answers: the session, not the link
                return code, ("the worker's session ended abnormally on a board that still answers (the command "
                              f"relay was killed or closed){': ' + last if last else ''}")
            return code, f"connection lost while the worker ran{': ' + last if last else ' (no reason given by ssh)'}"
        if code is not None and 128 < code < 128 + 65:
            return code, f"worker killed on the board by {_signal_name(code - 128)}"
        return code, None

    def _fetch(self, remote: str, out_dir: Path, *, final: bool) -> None:
        """Bring back the chunks not here yet (and, at the end, result.json and timings.npy, then remove the job
        folder on the board), in one command, each file by write-then-rename. Chunks on the board are complete
        files (the worker renames them into place), so any chunk listed is whole."""
        have = {f"{OUTPUTS_DIR}/{n}" for n in chunk_names(out_dir)}
        q = self._q
        excludes = " ".join(f"--exclude={q(n)}" for n in sorted(have))
        names = f"$(ls -d {OUTPUTS_DIR}/chunk-*.npz 2>/dev/null)"
        if final:  # result last: its presence means everything else is here
            names += f" $(ls -d timings.npy 2>/dev/null) $(ls -d {RESULT_FILE} 2>/dev/null)"
        cleanup = f" && cd / && rm -rf {q(remote)}" if final else ""
        command = f"cd {q(remote + '/out')} && tar -cf - {excludes} {names} /dev/null 2>/dev/null{cleanup}"
        (out_dir / OUTPUTS_DIR).mkdir(parents=True, exist_ok=True)

        # The transfer is read as a stream, bounded (trust.receive_tar), never whole into memory; tar's
        # end-of-archive padding (at most one 10 KiB record) follows the last member, and more than 1 MiB after
        # it is not a tar stream's tail (the relay is closed then).
        def consume(stream) -> None:
            receive_tar(stream, out_dir, where=self.where, final=final, have=have)

        proc = self.run(command, timeout=300, consume=consume)
        if proc.returncode == SSH_FAILED:
            if final:
                why = _last(proc.stderr) or "ssh failed"
                raise RemoteFailure(f"connection lost while bringing results back: {why}")
            return

    def _infra(self, job: Job, out_dir: Path, reason: str, code: int | None, start: float) -> JobResult:
        return infrastructure_result(job, out_dir, reason, code, round(time.perf_counter() - start, 3))

    def close(self) -> None:
        self.relay.close()
        self.ssh.close()
