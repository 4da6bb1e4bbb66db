"""A test lab on loopback: boards that are Debian's real sshd in front of a lean device venv, and a labgrid
coordinator + exporter publishing them as places.

A "board" here is this x86-64 machine itself (not emulated, not another ISA): `/usr/sbin/sshd -D -e -f CFG` on
127.0.0.1 with a throwaway config, host key and authorized_keys in a temporary folder (the system sshd and
~/.ssh are never touched), serving a venv that holds only numpy, psutil, the runtimes asked for (symlinked from
the test interpreter's site-packages: the same wheels, nothing else) and this checkout's harness (a .pth file,
as `pip install -e '.[device-onnx]'` would). Killing a board kills sshd and every session process under it.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from harness.paths import REPO_ROOT

SSHD = Path("/usr/sbin/sshd")
LABGRID_BIN = Path(sys.executable).parent


def wait_for_first_chunk(proc: subprocess.Popen, results: Path, entry: str = "*", timeout: float = 120.0) -> bool:
    """Wait until a `bench run` (proc, results folder) has brought back its first raw-output chunk of `entry`: the
    accuracy pass is done and the timing windows run on the board, the moment the board-killing tests strike.
    False when the run ended or the time ran out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if next(results.glob(f"*/work/jobs/{entry}/out/outputs/chunk-*.npz"), None) is not None:
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def lean_venv(path: Path, distributions: tuple[str, ...]) -> Path:
    """A venv holding only `distributions` (symlinked top-level packages + dist-info) and this harness."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3*/site-packages"))
    for name in distributions:
        dist = importlib.metadata.distribution(name)
        tops = {f.parts[0] for f in dist.files or () if f.parts and f.parts[0] not in ("..", "__pycache__")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (site / top).exists():
                os.symlink(src, site / top)
    (site / "edge_fair_bench_checkout.pth").write_text(str(REPO_ROOT) + "\n")
    return path / "bin" / "python"


# The loopback board's power switch (harness/launchers/power.py runs it through labgrid's ExternalPowerDriver):
# `off` kills the sshd named in its PidFile and every process under it (sessions, workers), as a power cut would;
# `on` starts that sshd again (daemonized, so the command returns); `cycle` is off then on. Written per board with
# absolute paths; run by the test's interpreter (psutil).
POWER_SCRIPT = """import subprocess, sys, time
import psutil
PIDFILE, SSHD, CONFIG, LOG = {pidfile!r}, {sshd!r}, {config!r}, {log!r}

def off():
    try:
        pid = int(open(PIDFILE).read().split()[0])
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)

def on():
    subprocess.run([SSHD, "-f", CONFIG, "-E", LOG], check=True)

action = sys.argv[1]
if action in ("off", "cycle"):
    off()
if action == "cycle":
    time.sleep(0.5)
if action in ("on", "cycle"):
    on()
"""


class Board:
    """One sshd "board" with its own host key, port, lean venv and work folder.

    `own_home` (the default) gives the board's sessions a home of their own (sshd's `SetEnv HOME=`), so the board
    account is a plain one, as a lab's board user is: the test host user's shell rc (here root's ~/.bashrc with
    pyenv) is not run for every command. That rc costs 0.2-0.3 s per command, and a board killed while it ran
    `pyenv rehash` leaves pyenv's lock file behind, after which every login shell of that user waits 60 s
    (docs/remote.md, "The board account"). `own_home=False` keeps the host user's home and rc: the "default
    account" lane of benchmarks/test_bench_remote.py."""

    def __init__(self, root: Path, name: str, client_pub: str, runtimes: tuple[str, ...] = ("onnxruntime",),
                 own_home: bool = True):
        self.name, self.dir = name, root / name
        self.dir.mkdir(parents=True)
        self.host_key = self.dir / "host_ed25519"
        self.host_pub = keygen(self.host_key)
        (self.dir / "authorized_keys").write_text(client_pub + "\n")
        self.python = lean_venv(self.dir / "venv", ("numpy", "psutil", *runtimes))
        self.workdir = self.dir / "work"
        self.port = free_port()
        self.config = self.dir / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", "LogLevel ERROR",
            "MaxSessions 64", "MaxStartups 64", *([f"SetEnv HOME={self.dir / 'home'}"] if own_home else []), ""]))
        if own_home:
            (self.dir / "home").mkdir()
        self.proc: subprocess.Popen | None = None
        self.power_script = self.dir / "power.py"
        self.power_script.write_text(POWER_SCRIPT.format(pidfile=str(self.dir / "sshd.pid"), sshd=str(SSHD),
                                                         config=str(self.config), log=str(self.dir / "sshd.log")))
        self.has_power = False

    def power_table(self) -> str:
        """The inventory's power table for this board (TOML inline table)."""
        cmd = f"{sys.executable} {self.power_script}"
        return (f'power = {{ cmd_on = "{cmd} on", cmd_off = "{cmd} off", cmd_cycle = "{cmd} cycle", '
                f"boot_timeout_s = 30 }}")

    def sshd_pid(self) -> int | None:
        try:
            pid = int((self.dir / "sshd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if psutil.pid_exists(pid) else None

    @property
    def user(self) -> str:
        import getpass

        return getpass.getuser()

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {' '.join(self.host_pub.split()[:2])}"

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # Debian's privilege-separation folder
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "sshd.log", "ab"), start_new_session=True)
        wait_port(self.port)

    def kill(self) -> None:
        """The board dies: sshd, every session and every worker under it, at once (SIGKILL). The sshd is the one
        the test started or, after a power cycle, the one the power switch started (its PidFile)."""
        pids = {pid for pid in (self.proc.pid if self.proc else None, self.sshd_pid()) if pid}
        procs = []
        for pid in pids:
            try:
                procs += [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        if self.proc is not None:
            self.proc.wait()
        psutil.wait_procs(procs, timeout=10)
        self.proc = None


class Lab:
    """Boards + the client key + known_hosts + an inventory file."""

    def __init__(self, root: Path):
        self.root = root
        self.client_key = root / "client_ed25519"
        self.client_pub = keygen(self.client_key)
        self.known_hosts = root / "known_hosts"
        self.inventory = root / "boards.toml"
        self.boards: dict[str, Board] = {}

    def add(self, name: str, runtimes: tuple[str, ...] = ("onnxruntime",), tags: dict | None = None,
            power: bool = False, own_home: bool = True) -> Board:
        board = Board(self.root, name, self.client_pub, runtimes, own_home=own_home)
        board.tags = tags or {"target": "cpu"}
        board.has_power = power
        board.start()
        self.boards[name] = board
        self.write()
        return board

    def write(self) -> None:
        self.known_hosts.write_text("".join(b.known_hosts_line() + "\n" for b in self.boards.values()))
        lines = ["[defaults]", f'identity_file = "{self.client_key}"', f'known_hosts = "{self.known_hosts}"',
                 "connect_timeout_s = 5", "keepalive_s = 2", ""]
        for b in self.boards.values():
            tags = ", ".join(f'{k} = "{v}"' for k, v in b.tags.items())
            lines += [f"[boards.{b.name}]", f'address = "{b.user}@127.0.0.1:{b.port}"', f'python = "{b.python}"',
                      f'workdir = "{b.workdir}"', f"tags = {{ {tags} }}"] + ([b.power_table()] if b.has_power else []) + [""]
        self.inventory.write_text("\n".join(lines))

    def close(self) -> None:
        for b in self.boards.values():
            b.kill()


class Labgrid:
    """labgrid-coordinator on loopback and one exporter publishing each board as a NetworkService; places with tags."""

    def __init__(self, root: Path, lab: Lab):
        self.root, self.lab = root / "labgrid", lab
        self.root.mkdir()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.coordinator = subprocess.Popen([str(LABGRID_BIN / "labgrid-coordinator"), "-l", self.address],
                                            cwd=self.root, stdout=subprocess.DEVNULL,
                                            stderr=open(self.root / "coordinator.log", "ab"), start_new_session=True)
        wait_port(self.port)
        resources = "".join(
            f"{b.name}:\n  NetworkService:\n    address: 127.0.0.1\n    username: {b.user}\n    port: {b.port}\n"
            for b in lab.boards.values())
        (self.root / "exporter.yaml").write_text(resources)
        self.exporter = subprocess.Popen([str(LABGRID_BIN / "labgrid-exporter"), "-c", self.address, "-n", "lab",
                                          "--hostname", "127.0.0.1", str(self.root / "exporter.yaml")],
                                         cwd=self.root, stdout=subprocess.DEVNULL,
                                         stderr=open(self.root / "exporter.log", "ab"), start_new_session=True)
        for b in lab.boards.values():
            self.client("-p", b.name, "create")
            self.client("-p", b.name, "add-match", f"lab/{b.name}/NetworkService")
            self.client("-p", b.name, "set-tags", *(f"{k}={v}" for k, v in b.tags.items()))
        self.wait_resources(len(lab.boards))

    def client(self, *args: str) -> str:
        proc = subprocess.run([str(LABGRID_BIN / "labgrid-client"), "-x", self.address, *args], capture_output=True,
                              text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def wait_resources(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client("resources").count("NetworkService") >= n:
                return
            time.sleep(0.3)
        raise RuntimeError("the exporter did not publish the boards")

    def close(self) -> None:
        for p in (self.exporter, self.coordinator):
            p.kill()
            p.wait()
