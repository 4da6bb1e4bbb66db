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

from harness.errors import UnavailableError, UnknownIdError
from harness.trackers.nvidia_smi import NvidiaSmiProbe
from harness.trackers.probe import Probe, ProbeReport
from harness.trackers.psutil_probe import PsutilProbe
from harness.trackers.tegrastats import TegrastatsProbe
from harness.trackers.vcgencmd import VcgencmdProbe

# numpy 2.0 renamed trapz to trapezoid; pyproject allows numpy 1.26, which has only trapz.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz

PROBES: dict[str, Callable[[], Probe]] = {
    "psutil": PsutilProbe,
    "tegrastats": TegrastatsProbe,
    "vcgencmd": VcgencmdProbe,
    "nvidia-smi": NvidiaSmiProbe,
}
DEFAULT_INTERVAL_S = 0.5


def make_probe(name: str) -> Probe:
    """The probe registered under `name`; UnknownIdError listing the valid names otherwise."""
    try:
        return PROBES[name]()
    except KeyError:
        raise UnknownIdError("telemetry probe", name, list(PROBES)) from None


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


class TelemetryWindow:
    """Context manager: starts the named probes, times the body, stops them; `reports` filled on exit.

    A probe that cannot start (tool missing, unparseable output) becomes an unavailable report; it never
    raises into the benchmark. An unknown probe name does raise (UnknownIdError): that is a profile typo.
    """

    def __init__(self, names: Iterable[str], *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.probes = {name: make_probe(name) for name in names}
        self.interval_s = interval_s
        self.reports: dict[str, ProbeReport] = {}
        self.window_s = 0.0
        self._failed: dict[str, str] = {}

    def __enter__(self) -> "TelemetryWindow":
        for name, probe in self.probes.items():
            try:
                probe.start(self.interval_s)
            except UnavailableError as exc:
                self._failed[name] = exc.message
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.window_s = time.perf_counter() - self._t0
        for name, probe in self.probes.items():
            if name in self._failed:
                self.reports[name] = ProbeReport(name=name, available=False, reason=self._failed[name],
                                                 info=probe.info)
                continue
            probe.stop()
            self.reports[name] = probe.report(self._t0)

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
