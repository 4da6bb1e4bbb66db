"""Telemetry over a timed window: probes chosen by name (from the target profile) sampled in the background.

    with TelemetryWindow(["psutil", "vcgencmd"], interval_s=0.5) as tw:
        samples = measure_loop(run_once)
    entry["speed"]["telemetry"] = tw.to_dict()
    energy = tw.energy_mj_per_inference(len(samples))

Sampling costs CPU on the device under test (a vcgencmd/nvidia-smi call is a process spawn), so the default
interval is 0.5 s: enough to see a thermal ramp or a clock change during a >= 1 s window, cheap enough
(~1-2% of one core) not to disturb it. Every probe also reads once at the start and once at the end.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import numpy as np

from harness.errors import UnavailableError, UnknownIdError, UsageError
from harness.trackers import cpufreq
from harness.trackers.hwmon import HwmonProbe
from harness.trackers.meter import MeterProbe
from harness.trackers.nvidia_smi import NvidiaSmiProbe
from harness.trackers.probe import Probe, ProbeReport
from harness.trackers.psutil_probe import PsutilProbe
from harness.trackers.tegrastats import TegrastatsProbe
from harness.trackers.vcgencmd import PmicProbe, VcgencmdProbe

# numpy 2.0 renamed trapz to trapezoid; pyproject allows numpy 1.26, which has only trapz.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz

PROBES: dict[str, Callable[[], Probe]] = {
    "psutil": PsutilProbe,
    "tegrastats": TegrastatsProbe,
    "vcgencmd": VcgencmdProbe,
    "nvidia-smi": NvidiaSmiProbe,
    "hwmon": HwmonProbe,
    "pi5-pmic": PmicProbe,
    "meter": MeterProbe,
    "cpufreq": cpufreq.CpufreqProbe,
}
# Probes that take an option in a profile's telemetry list ("cpufreq:allow=ondemand").
PROBE_OPTIONS: dict[str, Callable[[str], Probe]] = {"cpufreq": cpufreq.from_option}
DEFAULT_INTERVAL_S = 0.5


def make_probe(name: str) -> Probe:
    """The probe registered under `name` ("probe" or "probe:option"); UnknownIdError listing the valid names
    otherwise, UsageError for an option the probe does not take."""
    base, sep, option = name.partition(":")
    if base not in PROBES:
        raise UnknownIdError("telemetry probe", base, list(PROBES))
    if not sep:
        return PROBES[base]()
    if base not in PROBE_OPTIONS:
        raise UsageError(f"telemetry probe '{base}' takes no option (got '{name}')")
    try:
        return PROBE_OPTIONS[base](option)
    except ValueError as exc:
        raise UsageError(f"telemetry probe '{name}': {exc}") from None


def energy_mj_per_inference(power_samples: np.ndarray, window_s: float, inferences: int) -> float | None:
    """Energy per inference (mJ) from power readings [t_s, mW] over a window [0, window_s].

    Trapezoidal integration of power over time; mW x s = mJ. Readings rarely fall exactly on the window edges,
    so the power at 0 and window_s is interpolated from the neighbouring readings (held constant beyond the
    first/last one). Returns None without a reading or without inferences. The figure is whole-board (or
    whole-GPU) energy, idle power included: compare variants on the same device, not across devices.
    """
    p = np.asarray(power_samples, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0 or inferences <= 0 or window_s <= 0:
        return None
    p = p[np.argsort(p[:, 0], kind="stable")]
    inside = p[(p[:, 0] > 0) & (p[:, 0] < window_s), 0]
    grid = np.concatenate(([0.0], inside, [window_s]))
    power = np.interp(grid, p[:, 0], p[:, 1])
    return float(_trapezoid(power, grid) / inferences)


POWER_BLOCKS = 5
# Student's t 0.975 quantiles by degrees of freedom (the device side has no scipy; a test checks them against it).
T_975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 5: 2.570581836, 6: 2.446911851,
         7: 2.364624252, 8: 2.306004135, 9: 2.262157163}


def power_stats(power_samples: np.ndarray, window_s: float, blocks: int = POWER_BLOCKS) -> dict[str, Any]:
    """Mean power over the window [0, window_s] with a 95% interval, and idle power from readings before it.

    The interval is by batch means (Law & Kelton; the standard remedy for autocorrelated readings of one run): the
    window is cut into `blocks` equal time blocks, each block's mean power is one observation, and Student's t with
    blocks-1 degrees of freedom gives the interval. Energy per inference and its interval are these figures times
    window_s / inferences (a single-stream loop runs at a steady rate). Fewer than two readings in any block: no
    interval, with the reason. Readings at t < 0 were taken before the window (TelemetryWindow's idle_s) and give
    the idle power, reported beside the total and never subtracted silently (the host's harness/metrics/energy.py
    gives the figure above idle beside it, from `idle_mw` and the idle readings' spread `idle_sd_mw`).
    """
    p = np.asarray(power_samples, dtype=np.float64).reshape(-1, 2)
    out: dict[str, Any] = {"readings": int(((p[:, 0] >= 0) & (p[:, 0] <= window_s)).sum()), "mean_mw": None,
                           "ci_mw": None, "idle_mw": None, "interval": f"batch means over {blocks} time blocks, t",
                           "window_s": float(window_s)}
    idle = p[p[:, 0] < 0, 1]
    if idle.size:
        out["idle_mw"] = float(idle.mean())
        # the idle readings' spread: the idle mean's standard error for the power above idle (harness/metrics/energy.py)
        out["idle_sd_mw"] = float(idle.std(ddof=1)) if idle.size >= 2 else None
    inside = p[(p[:, 0] >= 0) & (p[:, 0] <= window_s)]
    if window_s <= 0 or not len(inside):
        out["interval_reason"] = "no power reading inside the window"
        return out
    out["mean_mw"] = float(inside[:, 1].mean())
    edges = np.linspace(0.0, window_s, blocks + 1)
    idx = np.clip(np.searchsorted(edges, inside[:, 0], side="right") - 1, 0, blocks - 1)
    counts = np.bincount(idx, minlength=blocks)
    if counts.min() < 2:
        out["interval_reason"] = (f"{int(counts.min())} reading(s) in the sparsest of {blocks} blocks (needs 2): "
                                  "a longer window or a shorter probe interval")
        return out
    means = np.bincount(idx, weights=inside[:, 1], minlength=blocks) / counts
    half = T_975[blocks - 1] * float(means.std(ddof=1)) / np.sqrt(blocks)
    out["ci_mw"] = [out["mean_mw"] - half, out["mean_mw"] + half]
    out["block_means_mw"] = [float(m) for m in means]
    return out


def idle_batch_means(idle: np.ndarray, idle_s: float) -> dict[str, Any]:
    """The idle readings' own batch-means interval, as power_stats gives the window's: {"idle_ci_mw",
    "idle_block_means_mw"} of readings [t_s in [0, idle_s], mW], or {} when a block has fewer than 2 readings. The
    power above idle (the host's harness/metrics/energy.py) takes the idle mean's standard error from it."""
    stats = power_stats(idle, idle_s)
    if stats["ci_mw"] is None:
        return {}
    return {"idle_ci_mw": stats["ci_mw"], "idle_block_means_mw": stats["block_means_mw"]}


class TelemetryWindow:
    """Context manager: starts the named probes, times the body, stops them; `reports` filled on exit.

    A probe that cannot start (tool missing, unparseable output) becomes an unavailable report; it never
    raises into the benchmark. An unknown probe name does raise (UnknownIdError): that is a profile typo.

    Before the window (issue 21): with `idle_s` > 0 the probes first sample that long with nothing running (idle
    power, reported as each power summary's `idle_mw` beside the window's mean, never subtracted), then
    `before_window()` runs (the worker's thermal soak, harness/device/steady.py), its readings kept apart as
    `soak_mw`. That phase has probes of its own, stopped before the window opens, so the window's summaries (clock
    ratio, temperatures, throttle flags that decide validity) describe the timed loop alone. `before` holds what
    the phase did: {idle_s, soak (what before_window returned)}.

    `stamps()` gives when the idle and timed windows started and ended on this machine's wall clock (time.time(),
    taken beside the perf_counter marks): what a host reading a meter of its own needs to place its readings
    (harness/launchers/host_meter.py).
    """

    def __init__(self, names: Iterable[str], *, interval_s: float = DEFAULT_INTERVAL_S, idle_s: float = 0.0,
                 before_window: Callable[[], Any] | None = None) -> None:
        if idle_s < 0:
            raise UsageError(f"idle_s must be >= 0 (got {idle_s:g})")
        self.names = tuple(names)
        self.probes = {name: make_probe(name) for name in self.names}
        self.interval_s = interval_s
        self.idle_s = idle_s  # probes sample this long before the window, with nothing running: idle power
        self.before_window = before_window
        self.before: dict[str, Any] = {}
        self.reports: dict[str, ProbeReport] = {}
        self.window_s = 0.0
        self._failed: dict[str, str] = {}
        self._before_power: dict[str, dict[str, Any]] = {}
        self._idle_wall: list[float] | None = None
        self._timed_wall: list[float] = []

    def _before(self) -> None:
        """Idle readings, then before_window(), on probes of their own (see the class docstring)."""
        probes, failed = {name: make_probe(name) for name in self.names}, set()
        for name, probe in probes.items():
            try:
                probe.start(self.interval_s)
            except UnavailableError:
                failed.add(name)  # the window's own probe says why
        t_idle, wall_idle = time.perf_counter(), time.time()
        if self.idle_s > 0 and len(failed) < len(probes):
            time.sleep(self.idle_s)
        t_end = time.perf_counter()
        if self.idle_s > 0:
            self._idle_wall = [wall_idle, time.time()]
        self.before = {"idle_s": round(t_end - t_idle, 3)}
        try:
            if self.before_window is not None:
                self.before["soak"] = self.before_window()
        finally:
            soak_s = time.perf_counter() - t_end
            for name, probe in probes.items():
                if name in failed:
                    continue
                probe.stop()
                series = probe.report(t_end).power_series_mw()  # idle readings at t < 0, the soak's after
                if series is not None:
                    stats = power_stats(series, soak_s)
                    self._before_power[name] = {
                        "idle_mw": stats["idle_mw"] if self.idle_s > 0 else None,
                        "idle_sd_mw": stats.get("idle_sd_mw") if self.idle_s > 0 else None,
                        "idle_readings": int((series[:, 0] < 0).sum()) if self.idle_s > 0 else 0,
                        "soak_mw": stats["mean_mw"] if self.before_window is not None else None}
                    if self.idle_s > 0:  # the idle window [t_idle, t_end] on its own clock: [0, idle_len]
                        idle_len = t_end - t_idle
                        idle = series[series[:, 0] < 0]
                        self._before_power[name].update(
                            idle_batch_means(np.c_[idle[:, 0] + idle_len, idle[:, 1]], idle_len))

    def __enter__(self) -> "TelemetryWindow":
        if self.idle_s > 0 or self.before_window is not None:
            self._before()
        for name, probe in self.probes.items():
            try:
                probe.start(self.interval_s)
            except UnavailableError as exc:
                self._failed[name] = exc.message
        self._t0 = time.perf_counter()
        self._timed_wall = [time.time()]
        return self

    def __exit__(self, *exc: object) -> None:
        self.window_s = time.perf_counter() - self._t0
        self._timed_wall.append(time.time())
        for name, probe in self.probes.items():
            if name in self._failed:
                self.reports[name] = ProbeReport(name=name, available=False, reason=self._failed[name],
                                                 info=probe.info)
                continue
            probe.stop()
            report = self.reports[name] = probe.report(self._t0)
            series = report.power_series_mw()
            if series is not None:
                power = report.extra["power"] = power_stats(series, self.window_s)
                power.update(self._before_power.get(name, {}))

    def stamps(self) -> dict[str, Any]:
        """JobResult `windows`: {"clock": "time.time", "timed": [start, end], "idle": [start, end] or None}, in
        seconds since the epoch on this machine's clock; call after the window closed."""
        return {"clock": "time.time", "timed": list(self._timed_wall), "idle": self._idle_wall}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """run.json speed.telemetry: {probe: {available, reason, info, summary}}."""
        return {name: report.to_dict() for name, report in self.reports.items()}

    def energy_mj_per_inference(self, inferences: int) -> float | None:
        """Energy from the first probe (in profile order) that reported a total-power field, else None."""
        for report in self.reports.values():
            series = report.power_series_mw()
            if series is not None:
                return energy_mj_per_inference(series, self.window_s, inferences)
        return None
