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

The pings go to the connection's command relay (harness/device/relay.py, one Python process per connection, started
once for all of a job's commands), which answers each with its time.time() at once: a ping costs the link alone,
never a process start or the board user's shell rc. The host pings before the worker starts and again after it
ends: a board clock that moved against the host's meanwhile (a step, or drift) widens the uncertainty by that much.
Everything the board answers is untrusted: one finite positive number, or the measurement fails with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

PINGS = 5
PING_TIMEOUT_S = 30.0  # for one ping's answer (the relay answers at once; a board that stops answering ends it)

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


def board_seconds(value: Any) -> float:
    """The board's time.time() as it answered it (JSON): a finite positive number, else ClockError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        from harness.names import shown

        raise ClockError(f"the board answered {shown(repr(value))[:60]}, not a time")
    return float(value)


class BoardClock:
    """The board's clock through the connection's command relay (harness/launchers/relay.py): open(), ping(n),
    close()."""

    def __init__(self, relay) -> None:
        self._relay = relay

    def open(self) -> None:
        """The relay running (it is the launcher's: close() leaves it be). ClockError when it cannot start."""
        from harness.launchers.relay import RelayLost

        try:
            self._relay.open()
        except RelayLost as exc:
            raise ClockError(str(exc)) from None

    def ping(self, n: int = PINGS) -> list[Ping]:
        """n pings; ClockError when the board does not answer (within PING_TIMEOUT_S) or answers something else."""
        from harness.launchers.relay import RelayLost

        try:
            said = self._relay.clock(n, PING_TIMEOUT_S)
        except RelayLost as exc:
            raise ClockError(str(exc)) from None
        return [(t1, board_seconds(b), t4) for t1, b, t4 in said]

    def close(self) -> None:
        """Nothing of ours runs on the board: the relay stays the launcher's."""
