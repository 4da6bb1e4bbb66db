"""A power meter published by a labgrid exporter as a sigrok resource, read on the host while a remote board runs a
job (issue 21, "Power as a probe"; docs/remote.md, "A meter through labgrid").

Labs publish USB power meters (sigrok's `rdtech-um` driver for the UM24C/UM25C/UM34C, `rdtech-tc` for the TC66C,
...) through their labgrid exporter: a `SigrokUSBSerialDevice`/`SigrokUSBDevice` on the exporter's host is published
as `NetworkSigrokUSBSerialDevice`/`NetworkSigrokUSBDevice` (labgrid/remote/exporter.py, USBSigrokExport: host,
busnum, devnum, path, driver, channels, channel_group), a `SigrokDevice` (driver, channels, channel_group) as it
is. The board's inventory table names the place's resource by name or class:

    [boards.pi5-a]                         # the labgrid place's name
    meter = "labgrid:um25c"                # the place's sigrok resource named um25c (or its class)
    meter_config = ["samplerate=10"]       # optional: sigrok-cli --config option lists, one --config each

The command is labgrid's own (labgrid/driver/sigrokdriver.py, SigrokCommon._get_sigrok_prefix): the resource's
command_prefix (for a Network* resource, ssh to the exporter's host through labgrid's sshmanager; for a SigrokDevice
none: sigrok-cli runs here), then `sigrok-cli -d DRIVER[:conn=BUS.DEV | :conn=PATH] [-C CHANNELS] [-g GROUP]`. We
add `--config` per `meter_config` entry and `--continuous -O analog`: the meter streams, one line per reading and
channel (`P: 0.580000 W`), read on a thread. labgrid's SigrokDmmDriver captures a fixed number of samples and
returns them only when sigrok-cli ends, without times, so it cannot place readings on the board's windows: the
stream is read here instead, each line stamped with the host's perf_counter when it arrives (as the command meter
stamps the reading when its call returns). sigrok-cli flushes per packet of samples (sigrok's demo driver sends one
every 100 ms): the k lines one read returns are stamped evenly over the time since the previous read, so a packet of
several readings is spread over the time it was taken in rather than piled on one instant.

Parsed strictly (sigrok-cli's analog output module, libsigrok src/output/analog.c: `CHANNEL: VALUE [SI prefix]UNIT
[flags]`): the power channel is the one channel whose unit is W (mW, kW ... scaled); a line in another unit (the
meter's V or A channel when the resource names no channel), a second power channel, or anything else makes the meter
unavailable with its first bad line, and a negative, NaN or infinite power is refused, as the command meter's
readings are (harness/trackers/meter.py).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

from harness.errors import InputError, IntegrityError, UnavailableError
from harness.trackers.meter import TOTAL_FIELD
from harness.trackers.probe import unparseable

PREFIX = "labgrid:"
TOOL = "sigrok-cli"
# What an exporter publishes for a sigrok meter (labgrid 26: resource/remote.py, resource/sigrok.py).
CLASSES = ("NetworkSigrokUSBSerialDevice", "NetworkSigrokUSBDevice", "SigrokDevice")
MAX_READINGS = 1_000_000   # a 1 kHz stream for 16 minutes; past it the meter is stopped with the reason
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)"
_LINE = re.compile(rf"^(?P<channel>[^:\s][^:]*): (?P<value>{_NUMBER}) ?(?P<unit>\S+)(?: [A-Za-z0-9 ]+)?$")
_SI_W = {"W": 1e3, "mW": 1.0, "µW": 1e-3, "uW": 1e-3, "kW": 1e6, "MW": 1e9}   # to mW
_SAFE = {  # published parameters that reach sigrok-cli's argv: data, so held to what the fields can hold
    "driver": re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$"),
    "channels": re.compile(r"^[A-Za-z0-9_.,=+-]{1,200}$"),
    "channel_group": re.compile(r"^[A-Za-z0-9_.+-]{1,64}$"),
    "path": re.compile(r"^/[A-Za-z0-9_./:+-]{1,255}$"),
    "host": re.compile(r"^[A-Za-z0-9_.:-]{1,253}$"),
}
_CONFIG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=[^\s:=]+(?::[A-Za-z_][A-Za-z0-9_]*=[^\s:=]+)*$")


def check_config(value: Any, where: str) -> tuple[str, ...]:
    """The inventory's `meter_config`: a list of sigrok-cli --config option lists (`key=value[:key=value...]`)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: meter_config must be a list of strings (sigrok-cli --config option lists), "
                         f"got {value!r}")
    for v in value:
        if not _CONFIG.match(v):
            raise InputError(f"{where}: meter_config entry {v!r} is not key=value[:key=value...]")
    return tuple(value)


@dataclass(frozen=True)
class SigrokSource:
    """One place's sigrok meter resource as the coordinator published it: name, class and checked parameters."""

    place: str
    resource: str
    cls: str
    params: Mapping[str, Any]
    config: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How the meter is named in every message and in run.json: never a path or a host."""
        return f"{TOOL} ({self.params['driver']})"

    def describe(self) -> dict[str, Any]:
        return {"source": "labgrid", "place": self.place, "resource": self.resource, "class": self.cls,
                "driver": self.params["driver"], "channels": self.params.get("channels")}

    def sigrok_args(self) -> list[str]:
        """sigrok-cli's arguments, as labgrid's SigrokCommon._get_sigrok_prefix builds them, then ours."""
        p = self.params
        if self.cls == "NetworkSigrokUSBDevice":
            device = f"{p['driver']}:conn={p['busnum']}.{p['devnum']}"
        elif self.cls == "NetworkSigrokUSBSerialDevice":
            device = f"{p['driver']}:conn={p['path']}"
        else:
            device = p["driver"]
        args = [TOOL, "-d", device]
        if p.get("channels"):
            args += ["-C", p["channels"]]
        if p.get("channel_group"):
            args += ["-g", p["channel_group"]]
        for option in self.config:
            args += ["--config", option]
        return args + ["--continuous", "-O", "analog"]

    def argv(self) -> list[str]:
        """The full command: a Network* resource's sigrok-cli runs on the exporter's host through labgrid's own
        ssh connection (NetworkResource.command_prefix, labgrid.util.ssh.sshmanager); UnavailableError when that
        connection cannot be made."""
        if not self.cls.startswith("Network"):
            return self.sigrok_args()
        from labgrid.util.ssh import sshmanager

        try:
            prefix = sshmanager.get(self.params["host"]).get_prefix() + ["--"]
        except Exception as exc:  # labgrid raises its own ExecutionError and OSErrors here
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UnavailableError(f"{self.label}: cannot reach the exporter's host {self.params['host']} over ssh "
                                   f"(labgrid sshmanager): {why}") from None
        return prefix + self.sigrok_args()


def resolve(name: str, place: str, published: Mapping[str, Mapping[str, Any]], config: tuple[str, ...] = ()
            ) -> SigrokSource:
    """The place's sigrok resource `name` (a resource name, else a class) from what the coordinator published for it
    ({resource name: {"cls", "params", "avail"}}): InputError (exit 2) when missing, ambiguous or unavailable;
    IntegrityError (exit 4) when its parameters are not what a sigrok resource holds."""
    from harness.names import shown

    where = f"labgrid place {shown(place)}: meter {shown(PREFIX + name)}"
    meters = {n: r for n, r in published.items() if r.get("cls") in CLASSES}
    found = [n for n in meters if n == name] or [n for n, r in meters.items() if r.get("cls") == name]
    have = ", ".join(f"{shown(n)} ({shown(r.get('cls'))})" for n, r in sorted(meters.items())) or "none"
    if not found:
        raise InputError(f"{where}: the place has no such sigrok resource (it has: {have}; the exporter publishes a "
                         "SigrokUSBSerialDevice, SigrokUSBDevice or SigrokDevice and the place matches it)")
    if len(found) > 1:
        raise InputError(f"{where}: {len(found)} resources of that class ({have}): name one")
    resource = found[0]
    entry = meters[resource]
    if not entry.get("avail", False):
        raise InputError(f"{where}: resource {shown(resource)} is not available at its exporter (unplugged, or the "
                         "exporter cannot see it)")
    params = dict(entry.get("params") or {})
    needed = ["driver"] + (["host", "path"] if entry["cls"] == "NetworkSigrokUSBSerialDevice" else
                           ["host", "busnum", "devnum"] if entry["cls"] == "NetworkSigrokUSBDevice" else [])
    for key in needed + ["channels", "channel_group"]:
        value = params.get(key)
        if value is None and key not in needed:
            continue
        ok = (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 16) \
            if key in ("busnum", "devnum") else (isinstance(value, str) and _SAFE[key].match(value) is not None)
        if not ok:
            raise IntegrityError(f"{where}: resource {shown(resource)} has a malformed {key}: {shown(repr(value))}")
    return SigrokSource(place=place, resource=resource, cls=entry["cls"], params=params, config=config)


def parse_line(text: str, label: str) -> tuple[str, float]:
    """(channel, mW) from one line of sigrok-cli's analog output; UnavailableError naming `label` and the line for a
    line that is not a power reading."""
    line = text.rstrip("\r\n")
    m = _LINE.match(line)
    if m is None:
        raise unparseable(label, line)
    scale = _SI_W.get(m["unit"])
    if scale is None:
        raise UnavailableError(f"{label}: channel {m['channel']!r} reads {m['unit']}, not power (W): name the "
                               "meter's power channel in the resource's `channels`")
    value = float(m["value"])
    if not math.isfinite(value) or value < 0:
        raise UnavailableError(f"{label}: not a power reading: {line!r} (negative or not a number)")
    return m["channel"], value * scale


class SigrokSampler:
    """sigrok-cli streaming on a thread: `samples` [(perf_counter, {TOTAL_FIELD: mW})], `reason` and `failed_at`
    (host perf_counter) when it stopped early; the interface HostMeter reads from its command sampler."""

    def __init__(self, source: SigrokSource):
        self.source = source
        self.label = source.label
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.reason: str | None = None
        self.failed_at: float | None = None
        self.info = source.describe()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._err = None

    def start(self, interval_s: float) -> None:  # noqa: ARG002 - the meter streams at its own rate
        """Start sigrok-cli; UnavailableError (the reason) when it cannot be started at all."""
        argv = self.source.argv()
        self._err = tempfile.TemporaryFile()
        try:
            # stdin a pipe held open: sigrok-cli --continuous stops at the first key (or EOF) on its stdin, which is
            # how labgrid's SigrokDriver.stop ends it (communicate(input=b"q")) and how stop() does here
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                          start_new_session=True)
        except OSError as exc:
            self._err.close()
            hint = " (Debian: apt-get install sigrok-cli)" if isinstance(exc, FileNotFoundError) else ""
            raise UnavailableError(f"{self.label}: cannot run {argv[0]}: {exc.strerror or exc}{hint}") from None
        self._thread = threading.Thread(target=self._read, name="sigrok-meter", daemon=True)
        self._thread.start()

    def _fail(self, reason: str) -> None:
        if self.failed_at is None:
            self.failed_at = time.perf_counter()
            self.reason = f"stopped while the job ran: {reason}"
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()  # the host's end of its stdin stays open until stop() closes it

    def _read(self) -> None:
        """Read the stream as it comes: what one read returns arrived together; its k lines are stamped evenly over
        the time since the previous read (the last at this read's time), as readings taken while the host was not
        looking; one line per read (a USB meter's pace) is stamped when it arrived."""
        import os

        assert self._proc is not None and self._proc.stdout is not None
        fd, channel, rest, t_prev = self._proc.stdout.fileno(), None, b"", None
        while self.failed_at is None:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            t = time.perf_counter()
            *lines, rest = (rest + chunk).split(b"\n")
            if len(rest) > 4096:
                self._fail(f"{self.label}: a line of more than 4096 bytes")
                break
            start = t if t_prev is None else t_prev
            for i, raw in enumerate(lines):
                try:
                    name, mw = parse_line(raw.decode("utf-8", errors="replace"), self.label)
                except UnavailableError as exc:
                    self._fail(exc.message)
                    break
                if channel is not None and name != channel:
                    self._fail(f"{self.label}: a second power channel {name!r} beside {channel!r}: name one in the "
                               "resource's `channels`")
                    break
                channel = name
                if len(self.samples) >= MAX_READINGS:
                    self._fail(f"{self.label}: more than {MAX_READINGS:,} readings: the meter streams faster than a "
                               "meter is read (set its samplerate in meter_config)")
                    break
                self.samples.append((start + (t - start) * (i + 1) / len(lines), {TOTAL_FIELD: mw}))
            if lines:
                t_prev = t
        self._proc.stdout.close()
        code = self._proc.wait()
        if not self._stopping and self.failed_at is None:
            self._err.seek(0)
            lines = [ln for ln in self._err.read(65536).decode("utf-8", errors="replace").splitlines()
                     if ln.strip() and "g_atomic_ref_count" not in ln]  # libsigrok 0.5's teardown warning
            self._fail(f"{self.label} exited with code {code}" + (f": {lines[-1].strip()}" if lines else ""))

    def stop(self) -> None:
        """Stop sigrok-cli (a key on its stdin, as labgrid's SigrokDriver.stop does; SIGKILL after 5 s) and its reader.
        Never raises."""
        self._stopping = True
        if self._proc is not None:
            try:
                self._proc.stdin.write(b"q")
                self._proc.stdin.close()
            except OSError:  # it ended already
                pass
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(10)
        if self._err is not None:
            self._err.close()
            self._err = None
