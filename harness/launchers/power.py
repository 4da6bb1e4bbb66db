"""A board's power switch: labgrid's ExternalPowerDriver (labgrid.driver.powerdriver, 26.x) driven from the
inventory, so a board that stops answering can be power-cycled and a person can switch it (`bench pool power`).

The inventory names the commands per board or place (docs/remote.md, "Power"):

    [boards.rpi-a]
    power = { cmd_on = "pdu on 3", cmd_off = "pdu off 3", cmd_cycle = "pdu cycle 3", delay_s = 2.0,
              boot_timeout_s = 120 }

`cmd_on` and `cmd_off` are required (labgrid's ExternalPowerDriver), `cmd_cycle` is optional (otherwise off,
`delay_s`, on), `boot_timeout_s` bounds the wait for the board's shell after a cycle, `command_timeout_s`
(default 60) each switching (labgrid runs the commands without a timeout: past it they are killed). The commands run on this host,
split with shlex (no shell), exactly as labgrid runs them; a command that exits non-zero is one error line.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import InputError, UnavailableError
from harness.names import shown

_KEYS = {"cmd_on", "cmd_off", "cmd_cycle", "delay_s", "boot_timeout_s", "command_timeout_s"}
DEFAULT_BOOT_TIMEOUT_S = 120.0
DEFAULT_COMMAND_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PowerSpec:
    cmd_on: str
    cmd_off: str
    cmd_cycle: str | None = None
    delay_s: float = 2.0
    boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S

    @classmethod
    def parse(cls, table: Any, where: str) -> "PowerSpec":
        """The inventory's `power` table; anything else is one InputError line naming `where`."""
        if not isinstance(table, dict):
            raise InputError(f"{where}: power must be a table {{ cmd_on = ..., cmd_off = ... }}")
        bad = sorted(set(table) - _KEYS)
        if bad:
            raise InputError(f"{where}: power: unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(_KEYS))}")
        for key in ("cmd_on", "cmd_off"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise InputError(f"{where}: power: {key} must be a non-empty command")
        if table.get("cmd_cycle") is not None and not isinstance(table["cmd_cycle"], str):
            raise InputError(f"{where}: power: cmd_cycle must be a command")
        for key in ("delay_s", "boot_timeout_s", "command_timeout_s"):
            value = table.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise InputError(f"{where}: power: {key} must be a positive number of seconds")
        return cls(cmd_on=table["cmd_on"], cmd_off=table["cmd_off"], cmd_cycle=table.get("cmd_cycle"),
                   delay_s=float(table.get("delay_s", 2.0)),
                   boot_timeout_s=float(table.get("boot_timeout_s", DEFAULT_BOOT_TIMEOUT_S)),
                   command_timeout_s=float(table.get("command_timeout_s", DEFAULT_COMMAND_TIMEOUT_S)))

    @property
    def source(self) -> str:
        return "inventory power commands"

    def driver(self, target):
        """labgrid's ExternalPowerDriver with these commands on `target`."""
        from labgrid.driver import ExternalPowerDriver

        return ExternalPowerDriver(target, "power", cmd_on=self.cmd_on, cmd_off=self.cmd_off,
                                   cmd_cycle=self.cmd_cycle, delay=self.delay_s)


def switch(spec, board: str, action: str) -> float:
    """Run `action` (on, off, cycle) for `board` through the labgrid power driver of `spec` (a PowerSpec:
    ExternalPowerDriver; a netpower.NetworkPowerSpec: NetworkPowerDriver; a netpower.PDUDaemonSpec:
    PDUDaemonDriver; a held netpower.USBHubPortSpec: ExternalPowerDriver running labgrid-client); the seconds it
    took."""
    if action not in ("on", "off", "cycle"):
        raise ValueError(action)
    try:
        from labgrid import Target
    except ImportError:
        raise UnavailableError("labgrid is not installed: pip install -e '.[remote]'") from None
    with _SWITCHING:
        return _switch(Target(f"bench-power-{board}"), spec, board, action)


# One switching at a time in this process: labgrid's drivers record each call on one global step stack
# (labgrid.step.steps: push, then `assert self._stack[-1] is step` on the way out), which two threads switching at
# once (a fan-out run power-cycling two boards) interleave and trip; and _bounded's kill on a timeout takes the
# processes started since its call began, which must be its own. The seconds returned start once the lock is held.
_SWITCHING = threading.Lock()


def _switch(target, spec, board: str, action: str) -> float:
    t0 = time.monotonic()
    try:
        driver = spec.driver(target)
        target.activate(driver)
        _bounded(lambda: getattr(driver, action)(), spec.command_timeout_s, f"board {board}: power {action}")
    except subprocess.CalledProcessError as exc:  # labgrid's processwrapper.check_output
        out = (exc.output or b"").decode(errors="replace").strip().splitlines()
        raise UnavailableError(f"board {board}: power {action} failed: {shlex.join(exc.cmd)} exited "
                               f"{exc.returncode}{': ' + shown(out[-1]) if out else ''}") from None
    except OSError as exc:
        if isinstance(spec, PowerSpec):
            raise UnavailableError(f"board {board}: power {action} failed: {exc.strerror or exc}") from None
        raise UnavailableError(_network_failure(spec, board, action, exc)) from None
    except UnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - a network backend (labgrid's ExecutionError, a backend's own, ...)
        raise UnavailableError(_network_failure(spec, board, action, exc)) from None
    finally:
        target.cleanup()
    return time.monotonic() - t0


def _network_failure(spec, board: str, action: str, exc: BaseException) -> str:
    """One line for a network power backend's error (requests' HTTPError is an OSError; its text names the URL)."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:300] or type(exc).__name__
    return f"board {board}: power {action} failed ({spec.source}): {shown(text)}"


def _bounded(call: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Run `call` (labgrid's driver, whose processwrapper.check_output has no timeout) for at most `timeout_s`:
    past it, the processes it started are killed (its read loop then ends) and UnavailableError says so."""
    import psutil

    me = psutil.Process()
    before = {c.pid for c in me.children()}
    box: dict[str, BaseException] = {}

    def go():
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["exc"] = exc

    thread = threading.Thread(target=go, name="bench-power", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        started = [c for c in me.children() if c.pid not in before]
        for proc in [d for c in started for d in (c, *c.children(recursive=True))]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        thread.join(10)
        raise UnavailableError(f"{what} did not finish within {timeout_s:g} s (command_timeout_s); killed")
    if "exc" in box:
        raise box["exc"]


def wait_for_shell(connect: Callable[[], Any], timeout_s: float, *, poll_s: float = 1.0):
    """Call `connect` (which raises UnavailableError while the board is not back) until it returns or `timeout_s`
    passes; (its result or None, seconds waited, the last reason)."""
    t0, last = time.monotonic(), None
    while True:
        try:
            return connect(), time.monotonic() - t0, None
        except UnavailableError as exc:
            last = exc.message
        if time.monotonic() - t0 + poll_s > timeout_s:
            return None, time.monotonic() - t0, last
        time.sleep(poll_s)
