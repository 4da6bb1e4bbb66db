"""The power switch of a board that is an sshd on this machine: the emulated aarch64 board behind sshd
(harness/launchers/arm64_exec.py; docs/remote.md, "The emulated aarch64 board behind sshd"), or a loopback test
board (tests/remote/lab.py). Its "power" is its sshd and everything running under it.

  python -m harness.launchers.sshd_power off|on|cycle --config CFG [--log FILE] [--sshd PATH]
      off: SIGKILL the sshd named in CFG's PidFile and every process under it (the ssh sessions, the shims and the
           qemu-user processes of the emulated board's workers), as a power cut would, and wait for them to go;
      on: start that sshd again (`sshd -f CFG [-E FILE]`, daemonized, so the command returns), unless it runs;
      cycle: off, a pause, on.
  python -m harness.launchers.sshd_power write PATH --config CFG [--log FILE] [--sshd PATH]
      writes PATH, an executable `PATH on|off|cycle` to name in the inventory's `power` table (cmd_on, cmd_off,
      cmd_cycle: run by labgrid's ExternalPowerDriver, harness/launchers/power.py).

Only the sshd of CFG's own PidFile and its descendants are touched: never the system's sshd (a config without a
PidFile of its own is refused, exit 2), and never other users of the same emulated rootfs (an `--emulate arm64`
run on this host shares the rootfs but is no child of the board's sshd). A PidFile that names a process that is
not an sshd (a stale file whose pid was reused) counts as off. Exit 0 when done; 2 for a bad config; 3 when sshd
does not start (its own message, one line).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from harness.errors import BenchError, InputError, UnavailableError
from harness.names import shown

SSHD = Path("/usr/sbin/sshd")
# the system sshd's PidFile (OpenSSH's default, Debian's /run): a board's switch must never name it
SYSTEM_PIDFILES = {"/run/sshd.pid", "/var/run/sshd.pid"}
CYCLE_PAUSE_S = 0.5  # between off and on: the listening port is free again once the killed sshd is reaped
KILL_WAIT_S = 10.0


def pidfile_of(config: Path) -> Path:
    """The PidFile named in an sshd config (sshd_config(5): keyword and value split by whitespace or '=', keywords
    case-insensitive, the first value obtained is used). InputError when the file cannot be read, names none or
    names the system sshd's."""
    try:
        text = Path(config).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{shown(config)}: cannot read the sshd config: {getattr(exc, 'strerror', None) or exc}") \
            from None
    for line in text.splitlines():
        words = line.replace("=", " ", 1).split()
        if words and words[0].lower() == "pidfile" and len(words) > 1:
            value = words[1].strip('"')
            if value in SYSTEM_PIDFILES or value.lower() == "none" or not Path(value).is_absolute():
                raise InputError(f"{shown(config)}: PidFile {shown(value)}: the board's sshd needs a PidFile of its "
                                 "own (an absolute path; the power switch kills the process it names)")
            return Path(value)
    raise InputError(f"{shown(config)}: no PidFile line: the board's sshd needs a PidFile of its own (the power "
                     "switch kills the process it names, never the system sshd's)")


def running_sshd(pidfile: Path):
    """The psutil.Process of the sshd the PidFile names, or None (no file, no such process, a zombie, or not an
    sshd)."""
    import psutil

    try:
        pid = int(pidfile.read_text().split()[0])
        proc = psutil.Process(pid)
        # a zombie is off: killed, and its parent (init, for the daemonized sshd) has not reaped it yet
        return proc if proc.name().startswith("sshd") and proc.status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def off(config: Path) -> None:
    import psutil

    sshd = running_sshd(pidfile_of(config))
    if sshd is None:
        return
    try:
        procs = [sshd, *sshd.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:  # SIGKILL: no process gets to clean up, as when the power is cut
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + KILL_WAIT_S
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(proc) -> bool:
    """Still running; a zombie (killed, not yet reaped by its parent, e.g. an sshd a test started as its child) is
    gone."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def on(config: Path, log: Path | None = None, sshd: Path = SSHD) -> None:
    if running_sshd(pidfile_of(config)) is not None:
        return
    Path("/run/sshd").mkdir(exist_ok=True)  # Debian's privilege-separation folder (gone after a reboot: a tmpfs)
    cmd = [str(sshd), "-f", str(config), *(["-E", str(log)] if log else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnavailableError(f"{shlex.join(cmd)}: {getattr(exc, 'strerror', None) or exc}") from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise UnavailableError(f"{shlex.join(cmd)} exited {proc.returncode}"
                               + (f": {shown(said[-1])}" if said else "") + (f" (see {log})" if log else ""))


def switch(action: str, config: Path, log: Path | None = None, sshd: Path = SSHD) -> None:
    if action not in ("on", "off", "cycle"):
        raise ValueError(action)
    if action in ("off", "cycle"):
        off(config)
    if action == "cycle":
        time.sleep(CYCLE_PAUSE_S)
    if action in ("on", "cycle"):
        on(config, log, sshd)


def write_switch(path: Path, *, config: Path, log: Path | None = None, sshd: Path = SSHD) -> Path:
    """An executable `PATH on|off|cycle` running this module with this interpreter and this checkout (as
    arm64_exec.write_shim does for the board's python)."""
    from harness.files import write_python_command

    pidfile_of(config)  # refused now, not at the first power cut
    return write_python_command(path, "harness.launchers.sshd_power",
                                ["--config", str(Path(config).resolve()), "--sshd", str(sshd),
                                 *(["--log", str(Path(log).resolve())] if log else [])],
                                "The power switch of a board behind its own sshd (harness/launchers/sshd_power.py).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.launchers.sshd_power", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("on", "off", "cycle", "write"))
    p.add_argument("path", nargs="?", help="write: the executable to write")
    p.add_argument("--config", required=True, type=Path, help="the board's sshd config (with a PidFile of its own)")
    p.add_argument("--log", type=Path, help="sshd's log (sshd -E FILE)")
    p.add_argument("--sshd", type=Path, default=SSHD, help=f"the sshd binary, absolute (default {SSHD})")
    a = p.parse_args(argv)
    try:
        if a.action == "write":
            if not a.path:
                p.error("write needs PATH")
            print(write_switch(Path(a.path), config=a.config, log=a.log, sshd=a.sshd))
        else:
            switch(a.action, a.config, a.log, a.sshd)
    except BenchError as exc:
        print(f"sshd_power: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
