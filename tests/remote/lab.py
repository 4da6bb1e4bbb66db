"""A test lab on loopback: boards that are Debian's real sshd in front of a lean device venv, and a labgrid
coordinator + exporter publishing them as places.

A "board" here is this x86-64 machine itself (not emulated, not another ISA): `/usr/sbin/sshd -D -e -f CFG` on
127.0.0.1 with a throwaway config, host key and authorized_keys in a temporary folder (the system sshd and
~/.ssh are never touched), serving a venv that holds only numpy, psutil, the runtimes asked for (symlinked from
the test interpreter's site-packages: the same wheels, nothing else) and this checkout's harness (a .pth file,
as `pip install -e '.[device-onnx]'` would). Killing a board kills sshd and every session process under it.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable

import psutil

from harness.launchers.sshd_power import running_sshd, write_switch
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


def power_cycled_run(proc: subprocess.Popen, results: Path, board: "Board", entry: str, *,
                     before_kill: Callable[[], None] | None = None, first_chunk_timeout: float = 120.0,
                     timeout: float = 240.0) -> tuple[Path, dict, dict]:
    """Issue 19's kill-and-power-cycle scenario, for every board with a power switch (loopback, exporter's power
    port, emulated): `proc` is a `bench run` of the one entry `entry` on `board` (its timing windows long enough
    to strike in, not waited for). Once its first raw-output chunk is back, `before_kill()` runs (if given) and the
    board dies (sshd, the session and the worker: it stops answering). The run must power-cycle it, wait for its
    shell, retry the entry once on it and complete: exit 0, "power-cycling it" said, no traceback, run.json
    complete with the entry ok on the board and one power cycle recorded (ok, timed, within the boot timeout), a
    new sshd behind the board. Returns (the run folder, run.json, the power cycle's record)."""
    try:
        assert wait_for_first_chunk(proc, results, entry, timeout=first_chunk_timeout), proc.communicate()[1][-3000:]
        old_sshd = board.sshd_pid()
        if before_kill is not None:
            before_kill()
        board.kill()
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "power-cycling it" in err and "Traceback" not in err, err[-3000:]
    run_dir = Path(out.strip().splitlines()[-1])
    doc = json.loads((run_dir / "run.json").read_text())
    (done,) = doc["entries"]
    assert doc["status"] == "complete" and done["status"] == "ok" and done["device"] == board.name, done
    (cycle,) = doc["power_cycles"]
    assert cycle["board"] == board.name and cycle["entry"] == entry and cycle["ok"] is True, cycle
    assert "connection lost" in cycle["reason"] and cycle["at_utc"].endswith("Z"), cycle
    assert cycle["cycle_s"] > 0 and 0 <= cycle["shell_s"] <= cycle["boot_timeout_s"], cycle
    assert board.sshd_pid() not in (None, old_sshd)  # a new sshd: the power switch really restarted it
    return run_dir, doc, cycle


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


BOOT_LINES = ("[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]",
              "[    0.000000] Linux version 6.6.20+rpt-rpi-2712 (loopback board)",
              "[    2.104411] Run /sbin/init as init process",
              "{name} login: ")


class ConsoleServer:
    """A board's serial console as ser2net serves it: a raw TCP port on loopback (what a labgrid exporter publishes as
    a NetworkSerialPort, or an inventory's `console = "tcp://..."`). Every connection is sent the board's boot lines, a
    line at a time (pyserial drops what arrives before its open() returned); `say(line)` prints a line on every
    connection; `drop()` closes them all (the board's power cut takes its USB-serial adapter with it). `hostile`: the
    first connection is sent terminal escape sequences and invalid UTF-8, then closed by the server."""

    def __init__(self, name: str, hostile: bool = False):
        self.name, self.hostile = name, hostile
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, name=f"console-{name}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._greet, args=(conn, self.accepted), daemon=True).start()

    def _greet(self, conn: socket.socket, n: int) -> None:
        if self.hostile and n == 1:
            for chunk in (b"\x1b[2J\x1b[H\x1b]0;pwned\x07screen cleared\r\n", b"bad bytes \xff\xfe\xc3 end\r\n",
                          b"\x1b[31mred alert\x1b[0m \xe2\x80\xae reversed\n", b"no newline at the close \x1b[5m"):
                time.sleep(0.1)
                conn.sendall(chunk)
            time.sleep(0.1)
            conn.close()
            return
        with self.lock:
            self.conns.append(conn)
        for line in BOOT_LINES:
            time.sleep(0.1)
            self._send(conn, line.format(name=self.name) + "\r\n")

    def _send(self, conn: socket.socket, text: str) -> None:
        try:
            conn.sendall(text.encode())
        except OSError:
            with self.lock:
                if conn in self.conns:
                    self.conns.remove(conn)

    def say(self, line: str) -> None:
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            self._send(conn, line + "\r\n")

    def drop(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.drop()


class PDU:
    """A network power switch on loopback speaking labgrid's `simplerest` model (labgrid/driver/power/simplerest.py):
    GET /outlet/<index>/<0|1> switches board <index> off (its power script's `off`: sshd and everything under it
    killed; its console says so, then drops) or on (sshd started again unless it runs; the console prints its boot
    lines); GET /outlet/<index> answers 1 or 0. The exporter publishes it as each board's NetworkPowerPort.

    It also answers as a PDUDaemon's HTTP listener for its PDU `PDUD_NAME` (pdudaemon 1.1.1, httplistener.py and
    listener.py): GET /power/control/<on|off|reboot>?hostname=PDU&port=<index>[&delay=S] switches the same outlets
    (reboot: off, S seconds, on) and answers 200, or 500 "Invalid request" for another PDU or no port. A board added
    with `pdu="pdudaemon"` is published by the exporter as a PDUDaemonPort instead."""

    PDUD_NAME = "lab-pdud"

    def __init__(self):
        self.boards: list[Board] = []
        self.calls: list[str] = []
        pdu = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                pdu.calls.append(self.path)
                if self.path.startswith("/power/control/"):
                    return self._pdudaemon()
                parts = self.path.strip("/").split("/")
                try:
                    board = pdu.boards[int(parts[1])]
                    body = pdu.switch(board, parts[2]) if len(parts) == 3 else \
                        ("1" if board.sshd_pid() else "0")
                except (IndexError, ValueError, subprocess.CalledProcessError) as exc:
                    self.send_error(500, str(exc).splitlines()[0] if str(exc) else "bad request")
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _pdudaemon(self):
                url = urllib.parse.urlparse(self.path)
                data = urllib.parse.parse_qs(url.query)
                host, port, delay = (data.get(k, [None])[0] for k in ("hostname", "port", "delay"))
                request = url.path.rsplit("/", 1)[-1]
                try:
                    if host != PDU.PDUD_NAME or port is None or request not in ("on", "off", "reboot"):
                        raise ValueError("Invalid request")
                    board = pdu.boards[int(port)]
                    if request == "reboot":
                        pdu.switch(board, "0")
                        time.sleep(int(delay if delay is not None else 5))
                    pdu.switch(board, "0" if request == "off" else "1")
                except (IndexError, ValueError, subprocess.CalledProcessError):
                    self.send_error(500, "Invalid request")
                    return
                data = b"OK - accepted request\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_port}"
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/outlet/{{index}}/{{value}}"
        threading.Thread(target=self.httpd.serve_forever, name="pdu", daemon=True).start()

    def add(self, board: "Board") -> int:
        self.boards.append(board)
        return len(self.boards) - 1

    def switch(self, board: "Board", value: str) -> str:
        if value == "0":
            if board.console is not None:
                board.console.say("[  421.000000] reboot: Power down")
                board.console.drop()
            subprocess.run([str(board.power_script), "off"], check=True, timeout=60)
            if board.proc is not None:  # the sshd the test started is our child: reap it
                board.proc.wait(10)
                board.proc = None
        elif value == "1":
            if board.sshd_pid() is None:
                subprocess.run([str(board.power_script), "on"], check=True, timeout=60)
                if board.console is not None:
                    for line in BOOT_LINES:
                        board.console.say(line.format(name=board.name))
        else:
            raise ValueError(f"value {value!r}")
        return ""

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
        # its power switch (the product's, harness/launchers/sshd_power.py, as a lab gives its emulated board one):
        # off kills this sshd and every process under it (sessions, workers), on starts it again, cycle does both
        self.power_script = write_switch(self.dir / "power", config=self.config, log=self.dir / "sshd.log",
                                         sshd=SSHD)
        self.has_power = False
        self.console: ConsoleServer | None = None  # its serial console (published by the exporter or the inventory)
        self.console_in_inventory = False
        self.pdu_index: int | None = None  # its outlet on the lab's PDU (published by the exporter)
        self.pdu_protocol = "simplerest"  # published as a NetworkPowerPort; "pdudaemon": as a PDUDaemonPort
        self.sigrok: dict[str, str] | None = None  # a sigrok meter resource (SigrokDevice) the exporter publishes

    def power_table(self, boot_timeout_s: float = 30) -> str:
        """The inventory's power table for this board (TOML inline table)."""
        cmd = str(self.power_script)
        return (f'power = {{ cmd_on = "{cmd} on", cmd_off = "{cmd} off", cmd_cycle = "{cmd} cycle", '
                f"boot_timeout_s = {boot_timeout_s:g} }}")

    def sshd_pid(self) -> int | None:
        """The pid of the board's running sshd (its PidFile's; None when off, a zombie included: a container's init
        may never reap the daemonized sshd a power switch killed)."""
        proc = running_sshd(self.dir / "sshd.pid")
        return proc.pid if proc is not None else None

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
        self.pdu: PDU | None = None

    def add(self, name: str, runtimes: tuple[str, ...] = ("onnxruntime",), tags: dict | None = None,
            power: bool = False, own_home: bool = True, console: bool | str = False,
            console_in_inventory: bool = False, pdu: bool | str = False,
            sigrok: dict[str, str] | None = None) -> Board:
        """`console`: a serial console server for the board (True, or "hostile"), published by the exporter as a
        NetworkSerialPort, or with `console_in_inventory` as the inventory's `console = "tcp://..."` instead;
        `pdu`: an outlet on the lab's simplerest PDU, published by the exporter as a NetworkPowerPort (or, with
        `pdu="pdudaemon"`, as a PDUDaemonPort of the same switch speaking pdudaemon's HTTP API); `sigrok`: a
        power meter published as a labgrid SigrokDevice named `meter-<board>` with these parameters (driver,
        channels, channel_group: sigrok's `demo` driver stands in for a USB meter, read with Debian's sigrok-cli)."""
        board = Board(self.root, name, self.client_pub, runtimes, own_home=own_home)
        board.tags = tags or {"target": "cpu"}
        board.has_power = power
        board.sigrok = sigrok
        if console:
            board.console = ConsoleServer(name, hostile=console == "hostile")
            board.console_in_inventory = console_in_inventory
        if pdu:
            self.pdu = self.pdu or PDU()
            board.pdu_index = self.pdu.add(board)
            board.pdu_protocol = "pdudaemon" if pdu == "pdudaemon" else "simplerest"
        board.start()
        self.boards[name] = board
        self.write()
        return board

    def write(self, path: Path | None = None, power: dict[str, float] | None = None) -> Path:
        """The inventory (`path`, default the lab's own) and known_hosts; `power`: {board: boot_timeout_s} of boards
        given their power switch in this inventory only (the lab's own keeps `Lab.add(power=...)`)."""
        power = power or {}
        self.known_hosts.write_text("".join(b.known_hosts_line() + "\n" for b in self.boards.values()))
        lines = ["[defaults]", f'identity_file = "{self.client_key}"', f'known_hosts = "{self.known_hosts}"',
                 "connect_timeout_s = 5", "keepalive_s = 2", ""]
        for b in self.boards.values():
            tags = ", ".join(f'{k} = "{v}"' for k, v in b.tags.items())
            lines += [f"[boards.{b.name}]", f'address = "{b.user}@127.0.0.1:{b.port}"', f'python = "{b.python}"',
                      f'workdir = "{b.workdir}"', f"tags = {{ {tags} }}"] \
                + ([b.power_table(power[b.name])] if b.name in power else [b.power_table()] if b.has_power else []) \
                + ([f'console = "tcp://127.0.0.1:{b.console.port}"'] if b.console and b.console_in_inventory else []) \
                + [""]
        path = path or self.inventory
        path.write_text("\n".join(lines))
        return path

    def close(self) -> None:
        for b in self.boards.values():
            b.kill()
            if b.console is not None:
                b.console.close()
        if self.pdu is not None:
            self.pdu.close()


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
            + (f"  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {b.console.port}\n    speed: 115200\n"
               "    protocol: raw\n" if b.console and not b.console_in_inventory else "")
            + (f"  NetworkPowerPort:\n    model: simplerest\n    host: '{lab.pdu.url}'\n    index: {b.pdu_index}\n"
               if b.pdu_index is not None and b.pdu_protocol == "simplerest" else "")
            + (f"  PDUDaemonPort:\n    host: '{lab.pdu.address}'\n    pdu: {PDU.PDUD_NAME}\n    index: {b.pdu_index}\n"
               if b.pdu_index is not None and b.pdu_protocol == "pdudaemon" else "")
            + (f"  meter-{b.name}:\n    cls: SigrokDevice\n"
               + "".join(f"    {k}: {v}\n" for k, v in b.sigrok.items()) if b.sigrok else "")
            for b in lab.boards.values())
        (self.root / "exporter.yaml").write_text(resources)
        self.exporter = subprocess.Popen([str(LABGRID_BIN / "labgrid-exporter"), "-c", self.address, "-n", "lab",
                                          "--hostname", "127.0.0.1", str(self.root / "exporter.yaml")],
                                         cwd=self.root, stdout=subprocess.DEVNULL,
                                         stderr=open(self.root / "exporter.log", "ab"), start_new_session=True)
        for b in lab.boards.values():
            self.client("-p", b.name, "create")
            self.client("-p", b.name, "add-match", f"lab/{b.name}/NetworkService")
            if b.console is not None and not b.console_in_inventory:
                self.client("-p", b.name, "add-match", f"lab/{b.name}/NetworkSerialPort")
            if b.pdu_index is not None:
                port_cls = "NetworkPowerPort" if b.pdu_protocol == "simplerest" else "PDUDaemonPort"
                self.client("-p", b.name, "add-match", f"lab/{b.name}/{port_cls}")
            if b.sigrok:
                self.client("-p", b.name, "add-match", f"lab/{b.name}/SigrokDevice")
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
