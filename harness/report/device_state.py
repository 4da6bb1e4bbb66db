"""The state each entry's board was in around its timed window (issue 21): idle power beside the active power and
energy per inference, the cool-down before the entry and the thermal soak before the timing, with the SoC
temperatures before and after each, the CPU governor and the fan state (run.json `speed.device_state`,
harness/device/steady.py, harness/trackers/fan.py; `speed.telemetry`).

One table, shared by the HTML and Markdown reports. Every value is read from run.json, which holds what a board sent
back after the host's cleaning (harness/device/steady.py clean_record); the renderers escape it."""

from __future__ import annotations

from typing import Any, Sequence

HEADERS = ("run", "entry", "idle power mW (readings)", "active power mW [95% CI]", "energy mJ/inference",
           "above idle mJ/inference [95% CI]", "cool-down", "soak", "governor", "fan (start → end of window)")
NOTE = ("Idle power: the probes read the board for idle_s seconds with nothing running, before the soak and the "
        "timed window; it is shown beside the active power. Active power: mean over the timed "
        "window with a batch-means interval. Energy is whole-board (gross); above idle is energy per inference less "
        "the idle power over the same window, its interval that of a difference of two independent means (Welch), "
        "empty with the reason without 2 idle readings. Cool-down (between entries): fixed seconds, or until the SoC "
        "temperature is within a band of the run's idle temperature, bounded. Soak: the model run untimed before "
        "the window. Temperatures: the hottest sensor the psutil probe reads. Governor: the CPU frequency "
        "governors the cpufreq probe saw during the timed window. Fan: hwmon fan RPM and PWM duty, and the "
        "thermal framework's fan cooling state, read as the entry started and after its timed window, where the "
        "board exposes them.")


def _num(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _temps(a: Any, b: Any) -> str:
    if _num(a, "g") == "-" and _num(b, "g") == "-":
        return "no temperature read"
    return f"{_num(a, '.1f')} → {_num(b, '.1f')} C"


def _power(telemetry: dict) -> tuple[dict | None, str | None]:
    """The first probe (profile order) whose summary has a power block: the one energy is computed from."""
    from harness.metrics.energy import energy_probe

    return energy_probe(telemetry)


def above_idle_cell(net: Any) -> str:
    """run.json `speed.energy_above_idle` as one cell: the net energy per inference [95% CI], or why there is none."""
    if not isinstance(net, dict):
        return "not recorded"
    e = net.get("energy_mj_per_inference")
    if not isinstance(e, (int, float)) or isinstance(e, bool):
        return f"- ({net.get('reason') or 'not recorded'})"
    ci = net.get("energy_ci_mj")
    return _num(e, ".3f") + (f" [{_num(ci[0], '.3f')}, {_num(ci[1], '.3f')}]" if isinstance(ci, list) and len(ci) == 2
                             else f" ({net.get('interval_reason') or 'no interval'})")


def _cooldown(c: dict | None) -> str:
    if not c or not c.get("done"):
        return "none"
    text = f"{_num(c.get('waited_s'), '.1f')} s, {_temps(c.get('temp_before_c'), c.get('temp_after_c'))}"
    if c.get("mode") == "to_idle":
        band = f"to within {_num(c.get('within_c'), 'g')} C of idle {_num(c.get('idle_temp_c'), '.1f')} C"
        text += f" ({band}: {'reached' if c.get('reached') else 'not reached'})"
    return text + (f"; {c['reason']}" if c.get("reason") and c.get("mode") == "to_idle" else "")


def _soak(s: dict | None) -> str:
    if not s or not s.get("done"):
        return "none"
    return (f"{_num(s.get('s'), '.1f')} s, {_num(s.get('inferences'), 'd')} inferences, "
            f"{_temps(s.get('temp_before_c'), s.get('temp_after_c'))}")


def _governor(telemetry: dict) -> str:
    probe = (telemetry or {}).get("cpufreq")
    seen = ((probe.get("summary") or {}).get("governors") if isinstance(probe, dict) else None) or {}
    names = sorted({g for gs in seen.values() if isinstance(gs, list) for g in gs if isinstance(g, str)}) \
        if isinstance(seen, dict) else []
    return "+".join(names) if names else "not recorded"


def _fan(state: dict | None) -> str:
    from harness.trackers.fan import describe

    if not isinstance(state, dict):
        return "not recorded"
    start, end = describe(state.get("start")), describe(state.get("end"))
    return start if start == end else f"{start} → {end}"


def rows(runs: Sequence[Any]) -> list[list[str]]:
    """One row per ok entry that recorded a device state or a power block; empty when none did."""
    out = []
    for run in runs:
        for x in run.entries:
            speed = x.get("speed") or {}
            state = speed.get("device_state") or {}
            power, probe = _power(speed.get("telemetry") or {})
            fan = state.get("fan") or {}
            fan_read = any(isinstance(f, dict) and f.get("readable") for f in fan.values())
            governor = _governor(speed.get("telemetry") or {})
            if not state.get("idle", {}).get("done") and not (state.get("cooldown") or {}).get("done") \
                    and not (state.get("soak") or {}).get("done") and power is None and not fan_read \
                    and governor == "not recorded":
                continue
            idle = "-"
            if power and power.get("idle_mw") is not None:
                idle = f"{_num(power['idle_mw'], '.0f')} ({_num(power.get('idle_readings'), 'd')})"
            active = "-"
            if power and power.get("mean_mw") is not None:
                ci = power.get("ci_mw")
                active = _num(power["mean_mw"], ".0f") + (
                    f" [{_num(ci[0], '.0f')}, {_num(ci[1], '.0f')}]" if isinstance(ci, list) and len(ci) == 2
                    else f" ({power.get('interval_reason') or 'no interval'})")
                active += f", {probe}"
            out.append([run.run_id, x["entry"], idle, active, _num(speed.get("energy_mj_per_inference"), ".3f"),
                        above_idle_cell(speed.get("energy_above_idle")), _cooldown(state.get("cooldown")),
                        _soak(state.get("soak")), governor,
                        _fan(state.get("fan"))])
    return out
