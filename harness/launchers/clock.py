"""The board's clock on the host's: an offset measured over the open SSH connection, with its uncertainty.

A host that reads a meter of its own while a remote board runs (harness/launchers/host_meter.py) stamps its readings
with its own clock (time.perf_counter, CLOCK_MONOTONIC), and the board reports its windows on its clock
(time.time()). One ping: the host notes its time t1, asks the board for its time.time() b, notes t4 when the answer
arrives. With a symmetric path the board read its clock at the midpoint, so

    offset = b - (t1 + t4) / 2        (board time minus host time)

and whatever the asymmetry, the true offset lies within half the round trip (t4 - t1) / 2 of it: NTP's on-wire
estimate with the board's processing time folded into the round trip (RFC 5905 section 8, the offset theta and
delay delta; the smallest-delay sample is the best one, RFC 5905 section 10's clock filter). A few pings are taken
and the one with the smallest round trip is kept.

The pings go to one small Python process on the board (the board's own `python`, reading a line on stdin and
answering with repr(time.time())), started once over the connection's ControlMaster and kept for the whole job, so a
ping costs the link alone, never a process start. The host pings before the worker starts and again after it ends:
a board clock that moved against the host's meanwhile (a step, or drift) widens the uncertainty by that much.
Everything the board answers is untrusted: one line, one finite positive number, or the measurement fails with the
reason.
"""

from __future__ import annotations

import math
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

PINGS = 5
PING_TIMEOUT_S = 30.0  # for the board's python to start and answer the first ping (an emulated board is slow)
_SCRIPT = ("import sys, time\n"
           "for _ in sys.stdin:\n"
           "    sys.stdout.write(repr(time.time()) + '\\n')\n"
           "    sys.stdout.flush()\n")

Ping = tuple  # (host send, board time.time(), host receive): host times on time.perf_counter


@dataclass(frozen=True)
class Offset:
    """board time = host time + offset_s, known within +- uncertainty_s."""

    offset_s: float
    uncertainty_s: float
    round_trip_s: float         # of the ping kept
    drift_s: float | None = None  # |offset after the job - offset before| when both were measured

    def to_host(self, board_t: float) -> float:
        """A board time.time() stamp on the host's perf_counter clock."""
        return board_t - self.offset_s

    def to_dict(self) -> dict[str, Any]:
        return {"offset_s": self.offset_s, "uncertainty_s": self.uncertainty_s, "round_trip_s": self.round_trip_s,
                "drift_s": self.drift_s, "method": "NTP on-wire, smallest round trip of "
                                                   f"{PINGS} pings before and after the job (RFC 5905)"}


def best(pings: Sequence[Ping]) -> Offset:
    """The offset from the ping with the smallest round trip; its uncertainty is half that round trip."""
    if not pings:
        raise ValueError("no ping")
    t1, b, t4 = min(pings, key=lambda p: p[2] - p[0])
    rtt = t4 - t1
    if rtt < 0:
        raise ValueError(f"a ping came back before it was sent ({rtt:g} s)")
    return Offset(offset_s=b - (t1 + t4) / 2, uncertainty_s=rtt / 2, round_trip_s=rtt)


def combine(before: Sequence[Ping], after: Sequence[Ping]) -> Offset:
    """One offset for a job: the better of the two measurements (smaller round trip), its uncertainty widened by how
    far the board's clock moved against the host's between them. Without `after`, the `before` one alone."""
    first = best(before)
    if not after:
        return first
    second = best(after)
    kept = first if first.round_trip_s <= second.round_trip_s else second
    drift = abs(second.offset_s - first.offset_s)
    return Offset(offset_s=kept.offset_s, uncertainty_s=kept.uncertainty_s + drift, round_trip_s=kept.round_trip_s,
                  drift_s=drift)


class ClockError(Exception):
    """The board's time could not be read: one line."""


def _board_time(line: bytes) -> float:
    text = line.decode("ascii", errors="replace").strip()
    try:
        value = float(text)
    except ValueError:
        raise ClockError(f"the board answered {text[:60]!r}, not a time") from None
    if not math.isfinite(value) or value <= 0:
        raise ClockError(f"the board answered {text[:60]!r}, not a time")
    return value


class BoardClock:
    """The board-side pinger over an SSH (harness/launchers/ssh.py) connection: open(), ping(n), close()."""

    def __init__(self, ssh, python: str):
        self._argv = ssh.argv(f"{shlex.quote(python)} -u -c {shlex.quote(_SCRIPT)}")
        self._proc: subprocess.Popen | None = None

    def open(self) -> None:
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)

    def ping(self, n: int = PINGS) -> list[Ping]:
        """n pings; ClockError when the board does not answer (within PING_TIMEOUT_S) or answers something else."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise ClockError("not open")
        timer = threading.Timer(PING_TIMEOUT_S, proc.kill)  # a board that stops answering cannot hang the run
        timer.start()
        out: list[Ping] = []
        try:
            for _ in range(n):
                t1 = time.perf_counter()
                try:
                    proc.stdin.write(b"\n")
                    proc.stdin.flush()
                except OSError as exc:
                    raise ClockError(f"the board's clock process is gone ({exc.strerror or exc})") from None
                line = proc.stdout.readline(128)
                t4 = time.perf_counter()
                if not line:
                    raise ClockError(f"no answer from the board's clock process (within {PING_TIMEOUT_S:g} s)")
                out.append((t1, _board_time(line), t4))
        finally:
            timer.cancel()
        return out

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()  # the board's loop ends at EOF
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
