"""A power meter attached to the HOST, read while a remote board runs a job (issue 21, "Power as a probe").

A lab's USB meter (rdserialtool's UM25C) or SCPI power analyser sits on the host that drives the board, not on the
board. Configured per board in the inventory (docs/remote.md, "Inventory"):

    [boards.pi5-a]
    meter = "rdserialtool --serial-device=/dev/rfcomm0 um25c"   # split by shlex, run without a shell
    meter_unit = "W"            # optional: the unit of a bare number (W or mW); a reading that names its unit uses it
    meter_interval_s = 0.5      # optional: seconds between calls (default: the probes' 0.5 s)

or, for a labgrid place whose exporter publishes the meter as a sigrok resource, `meter = "labgrid:NAME"` (with an
optional `meter_config`): harness/launchers/sigrok_meter.py streams it through sigrok-cli, as labgrid's driver
builds the command, into the same readings, windows and energy as a command meter (docs/remote.md).

`meter_unit` and `meter_interval_s` may sit in [defaults]; `meter` may not (one meter for every board would measure
the wrong one, as with `power`). A labgrid place takes these keys from [defaults] and the [boards.NAME] of its name.

While the job runs (SSHLauncher.launch), the host calls the command every interval on a thread (the `meter` probe's
own class, harness/trackers/meter.py: the same parsing and the same refusals, run without a shell) and keeps
(perf_counter, mW) readings. The worker reports when its idle and timed windows started and ended on the board's
time.time() (JobResult `windows`, checked in harness/launchers/trust.py); the board's clock is mapped onto the host's
by an offset measured over the SSH connection (harness/launchers/clock.py, NTP's on-wire estimate, uncertainty half
the smallest round trip, widened by the drift between the measurements before and after the job). Readings whose
mapped time falls inside the timed window give mean power with its 95% interval and energy per inference through
the board probes' own computation (harness/trackers/telemetry.py `power_stats` and `energy_mj_per_inference`, with
the board's window length and its timings' count); readings inside the idle window give idle power, reported
beside it (harness/metrics/energy.py gives the figure above idle beside the gross one). Energy is null, with
`energy_reason`, when fewer than MIN_READINGS readings fall
inside the timed window, when the clock's uncertainty exceeds MAX_UNCERTAINTY_FRACTION of the window, when the
board sent no window times, or when the meter failed before the window ended; never a guessed figure.

The reading lands in the entry as telemetry `meter` with `info.runs_on = "host"`, the command's name (the basename
of argv[0]: its arguments may hold secrets), the reading count and the clock offset with its uncertainty. A board
with a host meter is sent its job without `meter` in the telemetry list (BENCH_METER_CMD on that board is not
used); the host's meter takes the place `meter` had in the profile's list, or the last place when the profile does
not name it, and energy comes, as on the board, from the first probe in that order that has power readings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from harness.errors import InputError, UnavailableError
from harness.launchers.sigrok_meter import TOOL
from harness.trackers.meter import TOTAL_FIELD, UNITS_MW, MeterProbe, parse_reading
from harness.trackers.probe import ProbeReport, run_tool
from harness.trackers.telemetry import DEFAULT_INTERVAL_S, energy_mj_per_inference, idle_batch_means, power_stats

KEYS = ("meter", "meter_unit", "meter_interval_s", "meter_config")
MAX_INTERVAL_S = 60.0
MIN_READINGS = 2
# The clock's uncertainty u may shift each edge of the mapped window by up to u: past 5% of the window, readings
# from outside it (a warm-up, the soak, the idle board) could make up a visible share of what is averaged.
MAX_UNCERTAINTY_FRACTION = 0.05
PROBE = "meter"
FAILED_READINGS = 10_000  # readings a failed job's block keeps in run.json (a 20 Hz meter for over 8 minutes)
LABGRID = "labgrid:"
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class HostMeterSpec:
    """A board's host-side meter: the command (argv), the unit of a bare number, the interval between calls."""

    argv: tuple[str, ...]
    unit: str | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    labgrid: str | None = None      # `meter = "labgrid:NAME"`: the place's sigrok resource NAME (or class)
    config: tuple[str, ...] = ()    # its `meter_config`: sigrok-cli --config option lists
    sigrok: Any = None              # the resource, resolved from the held place (sigrok_meter.SigrokSource)

    @property
    def name(self) -> str:
        """The command's name as recorded: argv[0]'s basename, never its arguments (sigrok-cli for a labgrid
        meter)."""
        return TOOL if self.labgrid is not None else os.path.basename(self.argv[0])

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> "HostMeterSpec | None":
        """The spec from a board's merged inventory options ([defaults] then [boards.NAME]), or None without
        `meter`; InputError (one line naming `where`) for a bad value."""
        check_table(options, where, defaults=False)
        if "meter" not in options:
            return None
        if options["meter"].startswith(LABGRID):
            return cls(argv=(), labgrid=options["meter"][len(LABGRID):],
                       config=tuple(options.get("meter_config", ())))
        return cls(argv=tuple(shlex.split(options["meter"])), unit=options.get("meter_unit"),
                   interval_s=float(options.get("meter_interval_s", DEFAULT_INTERVAL_S)))

    def on_place(self, place: str, published: Mapping[str, Mapping[str, Any]]) -> "HostMeterSpec":
        """This spec with its labgrid resource resolved from what the held place publishes (sigrok_meter.resolve:
        InputError, exit 2, when the place lacks it or it is unavailable; IntegrityError, exit 4, when malformed)."""
        if self.labgrid is None:
            return self
        from harness.launchers.sigrok_meter import resolve

        return dataclasses.replace(self, sigrok=resolve(self.labgrid, place, published, self.config))


def check_table(table: Mapping[str, Any], where: str, *, defaults: bool) -> None:
    """The meter keys of one inventory table, strictly: InputError naming `where` and the key."""
    if defaults and ("meter" in table or "meter_config" in table):
        key = "meter" if "meter" in table else "meter_config"
        raise InputError(f"{where}: {key} belongs to one board ([boards.NAME]): one meter for every board would "
                         "measure the wrong one")
    if "meter" in table:
        cmd = table["meter"]
        if not isinstance(cmd, str):
            raise InputError(f"{where}: meter must be a string (the meter's command line), got {type(cmd).__name__}")
        if cmd.startswith(LABGRID):
            _check_labgrid(table, where)
            return
        if "meter_config" in table:
            raise InputError(f"{where}: meter_config configures a labgrid meter (meter = \"labgrid:NAME\"), not a "
                             "command")
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise InputError(f"{where}: meter: cannot split the command line: {exc}") from None
        if not argv:
            raise InputError(f"{where}: meter is empty")
    unit = table.get("meter_unit")
    if unit is not None and not (isinstance(unit, str) and unit.lower() in UNITS_MW):
        raise InputError(f"{where}: meter_unit must be \"W\" or \"mW\", got {unit!r}")
    if "meter_interval_s" in table:
        v = table["meter_interval_s"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not 0 < v <= MAX_INTERVAL_S:
            raise InputError(f"{where}: meter_interval_s must be a number of seconds in (0, {MAX_INTERVAL_S:g}], "
                             f"got {v!r}")


def _check_labgrid(table: Mapping[str, Any], where: str) -> None:
    """`meter = "labgrid:NAME"` and its `meter_config`; a command meter's unit and interval do not apply."""
    from harness.launchers.sigrok_meter import check_config

    name = table["meter"][len(LABGRID):]
    if not _RESOURCE_NAME.match(name):
        raise InputError(f"{where}: meter {table['meter']!r}: expected labgrid:NAME, NAME a labgrid resource's name "
                         "or class (letters, digits, _ . -)")
    extra = [k for k in ("meter_unit", "meter_interval_s") if k in table]
    if extra:
        raise InputError(f"{where}: {', '.join(extra)} configure a meter command; a labgrid meter streams at its own "
                         "rate in the unit sigrok reports (meter_config sets the device's options)")
    if "meter_config" in table:
        check_config(table["meter_config"], where)


def check_board_table(table: Mapping[str, Any], where: str) -> None:
    """A [boards.NAME] table: its meter keys, and no unit or interval without a meter of its own."""
    check_table(table, where, defaults=False)
    orphans = [k for k in ("meter_unit", "meter_interval_s", "meter_config") if k in table and "meter" not in table]
    if orphans:
        raise InputError(f"{where}: {', '.join(orphans)} without meter (the command is what they configure)")


# -- the host's readings on the board's windows ----------------------------------------------------------------
def in_window(readings: np.ndarray, start: float, end: float) -> np.ndarray:
    """[t - start, mW] of the readings [t, mW] with start <= t <= end (host clock)."""
    p = np.asarray(readings, dtype=np.float64).reshape(-1, 2)
    sel = p[(p[:, 0] >= start) & (p[:, 0] <= end)]
    return np.column_stack([sel[:, 0] - start, sel[:, 1]])


def summarise(readings: np.ndarray, windows: Mapping[str, Any] | None, offset, inferences: int, *,
              failed_at: float | None = None, failure: str | None = None,
              clock_error: str | None = None) -> tuple[dict[str, Any], np.ndarray, float | None]:
    """(the `power` block, the timed window's readings [t_s, mW], energy per inference in mJ or None).

    `readings`: [host perf_counter s, mW]; `windows`: the board's (trust-checked) JobResult `windows`; `offset`: a
    clock.Offset or None (then `clock_error` says why); `failed_at`: when the meter stopped answering (host clock),
    with `failure` its reason. Every null figure carries its reason (`energy_reason`, `idle_reason`)."""
    empty = np.zeros((0, 2))
    timed = (windows or {}).get("timed")
    idle = (windows or {}).get("idle")
    window_s = float(timed[1] - timed[0]) if timed else 0.0

    def null(reason: str) -> tuple[dict[str, Any], np.ndarray, None]:
        block = power_stats(empty, window_s)
        block.update(idle_mw=None, idle_readings=0, soak_mw=None, energy_reason=reason)
        return block, empty, None

    if not timed:
        return null("the worker reported no window times (JobResult `windows`)")
    if offset is None:
        return null(f"the board's clock could not be mapped to the host's: {clock_error or 'not measured'}")
    limit = MAX_UNCERTAINTY_FRACTION * window_s
    if offset.uncertainty_s > limit:
        return null(f"clock uncertainty {offset.uncertainty_s:.4f} s is more than {MAX_UNCERTAINTY_FRACTION:.0%} of "
                    f"the {window_s:.3f} s window")
    h0, h1 = offset.to_host(timed[0]), offset.to_host(timed[1])
    inside = in_window(readings, h0, h1)
    block = power_stats(inside, window_s)
    block.update(idle_mw=None, idle_readings=0, soak_mw=None)
    energy = None
    if failed_at is not None and failed_at <= h1:
        block["energy_reason"] = f"the meter stopped before the window ended: {failure}"
    elif len(inside) < MIN_READINGS:
        block["energy_reason"] = (f"{len(inside)} meter reading(s) inside the {window_s:.3f} s window (needs "
                                  f"{MIN_READINGS}): a longer window (--min-duration) or a shorter meter_interval_s")
    else:
        energy = energy_mj_per_inference(inside, window_s, inferences)
        if energy is None:
            block["energy_reason"] = "no inference in the window"
    if idle:
        idle_s = float(idle[1] - idle[0])
        got = in_window(readings, offset.to_host(idle[0]), offset.to_host(idle[1]))
        block["idle_readings"] = int(len(got))
        if offset.uncertainty_s > MAX_UNCERTAINTY_FRACTION * idle_s:
            block["idle_reason"] = (f"clock uncertainty {offset.uncertainty_s:.4f} s is more than "
                                    f"{MAX_UNCERTAINTY_FRACTION:.0%} of the {idle_s:.3f} s idle window")
        elif failed_at is not None and failed_at <= offset.to_host(idle[1]):
            block["idle_reason"] = f"the meter stopped before the idle window ended: {failure}"
        elif len(got) < MIN_READINGS:
            block["idle_reason"] = f"{len(got)} meter reading(s) inside the {idle_s:.3f} s idle window (needs " \
                                   f"{MIN_READINGS})"
        else:
            block["idle_mw"] = float(got[:, 1].mean())
            block["idle_sd_mw"] = float(got[:, 1].std(ddof=1))  # for the power above idle (metrics/energy.py)
            block.update(idle_batch_means(got, idle_s))
    return block, inside, energy


def place_in(names: Sequence[str]) -> list[str]:
    """The probe order with the host meter in it: where the profile names `meter`, else last."""
    order = list(names)
    return order if PROBE in order else order + [PROBE]


def merge(telemetry: Mapping[str, Any] | None, board_energy: float | None, order: Sequence[str],
          meter_entry: dict[str, Any], meter_energy: float | None) -> tuple[dict[str, Any], float | None]:
    """The entry's telemetry (the board's probes and the host's meter, in `order`) and its energy: from the first
    probe in that order with a power block, as TelemetryWindow.energy_mj_per_inference picks on the board."""
    board = dict(telemetry or {})
    board.pop(PROBE, None)
    out: dict[str, Any] = {}
    for name in order:
        if name == PROBE:
            out[PROBE] = meter_entry
        elif name in board:
            out[name] = board.pop(name)
    out.update(board)
    for name, entry in out.items():
        summary = entry.get("summary") if isinstance(entry, Mapping) else None
        if isinstance(summary, Mapping) and isinstance(summary.get("power"), Mapping):
            return out, (meter_energy if name == PROBE else board_energy)
    return out, board_energy


def failed_block(block: Mapping[str, Any], why: str | None) -> dict[str, Any]:
    """A meter block (HostMeter.entry's or failed_entry's) for a job that then failed: energy null, `energy_reason`
    "job failed: WHY", the readings and power figures as they were."""
    out = dict(block)
    summary = dict(out.get("summary") or {})
    power = dict(summary.get("power") or {"readings": 0, "mean_mw": None, "ci_mw": None, "idle_mw": None})
    power["energy_reason"] = f"job failed: {why or 'no reason given'}"
    summary["power"] = power
    out.update(summary=summary, energy_mj_per_inference=None)
    return out


class _Sampler(MeterProbe):
    """The meter probe run on the host: named by its basename in every message, the time it stopped kept."""

    def __init__(self, spec: HostMeterSpec):
        super().__init__(cmd=shlex.join(spec.argv), unit=spec.unit)
        self.label = spec.name
        self.failed_at: float | None = None

    def read(self):
        out = run_tool(self.argv, shown_as=self.label)
        return {TOTAL_FIELD: parse_reading(out, self.unit, tool=f"meter ({self.label})", unit_setting="meter_unit")}

    def _take(self) -> bool:
        ok = super()._take()
        if not ok and self.failed_at is None:
            self.failed_at = time.perf_counter()
            self.reason = f"stopped while the job ran: {self.reason.split(': ', 1)[-1]}" if self.reason else None
        return ok


class HostMeter:
    """One job's host-side metering: start() before the worker, stop() after it, apply() to its result."""

    def __init__(self, spec: HostMeterSpec):
        self.spec = spec
        if spec.labgrid is not None:
            from harness.launchers.sigrok_meter import SigrokSampler

            if spec.sigrok is None:
                raise ValueError("HostMeter: a labgrid meter must be resolved on its place first (on_place)")
            self.sampler = SigrokSampler(spec.sigrok)
        else:
            self.sampler = _Sampler(spec)
        self.clock = None
        self.reason: str | None = None        # the meter could not be read at all, or stopped
        self.clock_error: str | None = None
        self._before: list = []
        self._after: list = []
        self._started = False
        self._t0: float | None = None          # host perf_counter when sampling started

    @property
    def began(self) -> bool:
        """Whether start() ran (the meter was asked to read, whether or not it could)."""
        return self._t0 is not None or self.reason is not None

    @staticmethod
    def board_job(job):
        """The job as the board gets it: without `meter` in its telemetry (the host reads this board's meter)."""
        return dataclasses.replace(job, telemetry=tuple(n for n in job.telemetry if n.partition(":")[0] != PROBE))

    def start(self, relay) -> None:
        """The clock's first pings (through the connection's command relay, harness/launchers/relay.py), then the
        sampling thread. Never raises for the meter or the clock: what failed is kept as the reason."""
        from harness.launchers.clock import BoardClock, ClockError

        self.clock = BoardClock(relay)
        try:
            self.clock.open()
            self._before = self.clock.ping()
        except (ClockError, OSError) as exc:
            self.clock_error = str(exc)
        self._t0 = time.perf_counter()
        try:
            self.sampler.start(self.spec.interval_s)
            self._started = True
        except UnavailableError as exc:
            self.reason = exc.message

    def stop(self) -> None:
        """Stop sampling, ping the board's clock again, close it. Never raises."""
        from harness.launchers.clock import ClockError

        if self._started:
            self.sampler.stop()
            self._started = False
            self.reason = self.reason or self.sampler.reason
        if self.clock is not None:
            if self.clock_error is None:
                try:
                    self._after = self.clock.ping()
                except (ClockError, OSError) as exc:
                    self._after = []
                    self.clock_error = f"after the job: {exc}"
            self.clock.close()
            self.clock = None

    def offset(self):
        from harness.launchers.clock import combine

        if self.clock_error is not None and not self._before:
            return None
        try:
            return combine(self._before, self._after)
        except ValueError as exc:
            self.clock_error = str(exc)
            return None

    def entry(self, windows: Mapping[str, Any] | None, inferences: int) -> tuple[dict[str, Any], float | None]:
        """The telemetry `meter` entry (ProbeReport.to_dict's shape) and the energy per inference it gives."""
        offset = self.offset()
        readings = np.asarray([(t, r[TOTAL_FIELD]) for t, r in self.sampler.samples], np.float64).reshape(-1, 2)
        info = {"runs_on": "host", "command": self.spec.name, "unit": self.spec.unit,
                "interval_s": None if self.spec.labgrid is not None else self.spec.interval_s,
                **({"labgrid": self.spec.sigrok.describe()} if self.spec.sigrok is not None else {}),
                "readings": int(len(readings)),
                "clock": offset.to_dict() if offset is not None else {"error": self.clock_error or "not measured"},
                "board_windows": dict(windows) if windows else None, "inferences": int(inferences)}
        if not len(readings):
            report = ProbeReport(name=PROBE, available=False, reason=self.reason or "no reading", info=info)
            return report.to_dict(), None
        power, inside, energy = summarise(readings, windows, offset, inferences, failed_at=self.sampler.failed_at,
                                          failure=self.reason, clock_error=self.clock_error)
        report = ProbeReport(name=PROBE, available=self.reason is None, reason=self.reason, info=info,
                             samples=[(float(t), {TOTAL_FIELD: float(v)}) for t, v in inside],
                             extra={"power": power}, power_fields=(TOTAL_FIELD,))
        return report.to_dict(), energy

    def failed_entry(self, windows: Mapping[str, Any] | None, why: str) -> dict[str, Any]:
        """The `meter` block of a job that failed: what the meter saw, energy null with `energy_reason` "job failed:
        WHY". The summary covers every reading of the job (times from when sampling started, host clock), `readings_mw`
        keeps them ([t_s, mW], the first FAILED_READINGS), and where the board sent its window times the `power` block
        is the windows' as for a finished job (mean, interval, idle), never an energy."""
        offset = self.offset()
        readings = np.asarray([(t, r[TOTAL_FIELD]) for t, r in self.sampler.samples], np.float64).reshape(-1, 2)
        info = {"runs_on": "host", "command": self.spec.name, "unit": self.spec.unit,
                "interval_s": None if self.spec.labgrid is not None else self.spec.interval_s,
                **({"labgrid": self.spec.sigrok.describe()} if self.spec.sigrok is not None else {}),
                "readings": int(len(readings)), "job": f"failed: {why}",
                "clock": offset.to_dict() if offset is not None else {"error": self.clock_error or "not measured"},
                "board_windows": dict(windows) if windows else None}
        t0 = self._t0 if self._t0 is not None else (float(readings[0, 0]) if len(readings) else 0.0)
        if windows and windows.get("timed"):
            power, _, _ = summarise(readings, windows, offset, 0, failed_at=self.sampler.failed_at,
                                    failure=self.reason, clock_error=self.clock_error)
        else:
            power = {"readings": 0, "mean_mw": None, "ci_mw": None, "idle_mw": None, "idle_readings": 0}
        power["energy_reason"] = f"job failed: {why}"
        report = ProbeReport(name=PROBE, available=bool(len(readings)) and self.reason is None,
                             reason=self.reason or (None if len(readings) else "no reading"), info=info,
                             samples=[(float(t - t0), {TOTAL_FIELD: float(v)}) for t, v in readings],
                             extra={"power": power}, power_fields=(TOTAL_FIELD,))
        block = report.to_dict()
        block["readings_mw"] = [[round(float(t - t0), 4), float(v)] for t, v in readings[:FAILED_READINGS]]
        if len(readings) > FAILED_READINGS:
            block["readings_dropped"] = int(len(readings) - FAILED_READINGS)
        block["energy_mj_per_inference"] = None
        return block

    def apply_failed(self, result, why: str | None = None):
        """A failed job's `result` (a test failure or an infrastructure error) with the meter's block as its
        telemetry `meter` (failed_entry), so the entry keeps what the meter saw."""
        windows = getattr(result, "windows", None)
        return result.replace(telemetry={PROBE: self.failed_entry(windows, why or result.reason or "no reason given")})

    def apply(self, result, job, inferences: int):
        """`result` (the board's, trust-checked) with the host meter's entry in its telemetry and the energy chosen
        by probe order (merge)."""
        entry, energy = self.entry(result.windows, inferences)
        telemetry, chosen = merge(result.telemetry, result.energy_mj_per_inference, place_in(job.telemetry), entry,
                                  energy)
        return result.replace(telemetry=telemetry, energy_mj_per_inference=chosen)
