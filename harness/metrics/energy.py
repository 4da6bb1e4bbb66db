"""Energy per inference above idle, beside the gross figure (issue 21: "idle power measured before the window and
subtracted or reported beside it"; docs/metrics.md "Energy above idle").

The gross figure (harness/trackers/telemetry.py energy_mj_per_inference) is whole-board energy over the timed window
divided by its inferences, idle power included. The net figure takes out what the idle board drew over the same time:

    net power      P_net = P_active - P_idle                                  (mW)
    net energy     E_net = E_gross - P_idle x window_s / inferences           (mJ per inference)

Its interval is that of the difference of two independent means (Welch 1947, "The generalization of Student's
problem when several different population variances are involved", Biometrika 34): the active mean's standard error
from its batch-means interval (power_stats: half-width / t(0.975, blocks - 1)), the idle mean's by the same batch
means over the idle window where each of its blocks has 2 readings (telemetry.idle_batch_means: readings a few
tenths of a second apart are autocorrelated, and s / sqrt(n) would understate the error), else from its readings
(s / sqrt(n), which assumes independent readings; `idle_interval` says which), combined as sqrt(SE_a^2 + SE_i^2)
with Student's t on the Welch-Satterthwaite degrees of freedom. The idle board is read before the window, apart
from it: the two means are independent. The energy interval is the
power interval times window_s / inferences, as power_stats states for the gross energy.

Null, always with `reason`: no power probe, no idle window (`--idle-s 0`) or fewer than 2 idle readings, no active
mean; the interval alone null with `interval_reason` when the active mean has none (sparse blocks) or the idle
readings' spread was not recorded. Everything is read from run.json telemetry a board sent: a figure that is not a
finite number is treated as missing, never used.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from harness.trackers.telemetry import POWER_BLOCKS

MIN_IDLE_READINGS = 2
INTERVAL = ("difference of two independent means (Welch): active by batch means, idle as idle_interval says; t on "
            "Welch-Satterthwaite df")


def energy_probe(telemetry: Mapping[str, Any] | None) -> tuple[dict | None, str | None]:
    """(power block, probe name) of the first probe (profile order) whose summary has a power block: the one the
    entry's energy is computed from (TelemetryWindow.energy_mj_per_inference, host_meter.merge)."""
    for name, probe in (telemetry or {}).items():
        power = ((probe or {}).get("summary") or {}).get("power") if isinstance(probe, Mapping) else None
        if isinstance(power, Mapping):
            return dict(power), name
    return None, None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _pair(v: Any) -> list[float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) is not None for x in v):
        return [float(v[0]), float(v[1])]
    return None


def above_idle(telemetry: Mapping[str, Any] | None, gross_mj: float | None, inferences: int) -> dict[str, Any]:
    """run.json `speed.energy_above_idle`: the net power and energy per inference with their 95% intervals, the
    idle power they subtract, and the gross energy's interval beside them (module docstring)."""
    power, probe = energy_probe(telemetry)
    out: dict[str, Any] = {"probe": probe, "idle_mw": None, "idle_readings": 0, "net_mw": None, "net_ci_mw": None,
                           "energy_mj_per_inference": None, "energy_ci_mj": None, "gross_energy_ci_mj": None,
                           "interval": INTERVAL}
    if power is None:
        out["reason"] = "no power probe on this target"
        return out
    mean, idle, window_s = _num(power.get("mean_mw")), _num(power.get("idle_mw")), _num(power.get("window_s"))
    n_idle = power.get("idle_readings")
    n_idle = n_idle if isinstance(n_idle, int) and not isinstance(n_idle, bool) and n_idle >= 0 else 0
    ci = _pair(power.get("ci_mw"))
    scale = window_s / inferences if window_s is not None and window_s > 0 and inferences > 0 else None
    if ci is not None and scale is not None:
        out["gross_energy_ci_mj"] = [c * scale for c in ci]
    out.update(idle_mw=idle, idle_readings=n_idle)
    if idle is None or "idle_readings" not in power:
        out.update(idle_mw=None, idle_readings=0)
        out["reason"] = f"no idle power: {power.get('idle_reason') or 'no idle window (--idle-s 0)'}"
        return out
    if n_idle < MIN_IDLE_READINGS:
        out["reason"] = f"{n_idle} idle reading(s) (needs {MIN_IDLE_READINGS})"
        return out
    if mean is None:
        out["reason"] = f"no active power: {power.get('interval_reason') or 'no reading inside the window'}"
        return out
    out["net_mw"] = mean - idle
    gross = _num(gross_mj)
    if gross is not None and scale is not None:
        out["energy_mj_per_inference"] = gross - idle * scale
    else:
        out["reason"] = ("no energy: " + (power.get("energy_reason") or "no gross energy")) if gross is None else \
            "no energy: the window's length was not recorded"
    half = _half_width(power, ci, n_idle, out)
    if isinstance(half, str):
        out["interval_reason"] = half
        return out
    out["net_ci_mw"] = [out["net_mw"] - half, out["net_mw"] + half]
    if out["energy_mj_per_inference"] is not None:
        e = out["energy_mj_per_inference"]
        out["energy_ci_mj"] = [e - half * scale, e + half * scale]
    return out


def _blocks(means: Any) -> int:
    return len(means) if isinstance(means, list) and len(means) >= 2 else POWER_BLOCKS


def _half_width(power: Mapping[str, Any], ci: list[float] | None, n_idle: int, out: dict[str, Any]) -> float | str:
    """The 95% half-width of active - idle (Welch), or why there is none; `out["idle_interval"]` says how the idle
    mean's standard error was taken."""
    from scipy.stats import t

    if ci is None:
        return f"no interval for the active power: {power.get('interval_reason') or 'not recorded'}"
    blocks = _blocks(power.get("block_means_mw"))
    se_a, df_a = (ci[1] - ci[0]) / 2 / float(t.ppf(0.975, blocks - 1)), blocks - 1
    idle_ci = _pair(power.get("idle_ci_mw"))
    if idle_ci is not None:
        idle_blocks = _blocks(power.get("idle_block_means_mw"))
        se_i, df_i = (idle_ci[1] - idle_ci[0]) / 2 / float(t.ppf(0.975, idle_blocks - 1)), idle_blocks - 1
        out["idle_interval"] = f"batch means over {idle_blocks} time blocks of the idle window"
    else:
        sd_idle = _num(power.get("idle_sd_mw"))
        if sd_idle is None or sd_idle < 0:
            return "the idle readings' spread (idle_sd_mw) was not recorded"
        se_i, df_i = sd_idle / math.sqrt(n_idle), n_idle - 1
        out["idle_interval"] = ("standard error of the idle readings (fewer than 2 readings in an idle block for "
                                "batch means; assumes independent readings)")
    var = se_a ** 2 + se_i ** 2
    if var == 0:
        return 0.0
    df = var ** 2 / (se_a ** 4 / df_a + se_i ** 4 / df_i)
    return float(t.ppf(0.975, df)) * math.sqrt(var)
