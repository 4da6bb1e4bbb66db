"""Steady state on a board (issue 21): cool down between entries, soak before the timed window.

A passively cooled board (a Raspberry Pi without a fan) heats up over minutes of inference and its firmware lowers
the clock near 80-85 C, so the entry that runs second starts warmer than the first and a short timed window measures
a cold chip that the next minute would throttle. Two remedies, both as MLPerf Inference's power rules and the
Raspberry Pi documentation on thermal throttling describe them:

- **thermal soak**: run the workload untimed until the board reaches its operating temperature, then time it
  (`soak`, called by the telemetry window after the idle readings, before the timed loop);
- **cool-down**: between entries, let the board return to (near) its idle temperature, so every entry starts from
  the same state (`cool_down`, before the model loads). A fixed wait, or a wait until the SoC temperature is within
  `cooldown_within_c` of the run's idle temperature, bounded by `cooldown_s`.

Temperatures are the psutil probe's (harness/trackers/psutil_probe.py `soc_temp_c`: the hottest sensor; a fake tree
through $BENCH_THERMAL_ROOT). Each step returns a record for result.json's `steady_state`; nothing raises for a
missing sensor: the record says so.

Standard library and the psutil probe only: the worker runs this on the board (Python 3.8).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Tuple

from harness.jobs import SteadyState

TempReader = Callable[[], Tuple[Optional[float], Optional[str]]]
POLL_S = 1.0  # how often a cool-down reads the temperature


def read_temp() -> tuple[float | None, str | None]:
    from harness.trackers.psutil_probe import soc_temp_c

    return soc_temp_c()


def cool_down(settings: SteadyState, *, temp: TempReader = read_temp, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic, poll_s: float = POLL_S) -> dict[str, Any]:
    """Wait before the entry as `settings` asks; returns what was done:
    {done, mode (fixed | to_idle), waited_s, max_s, temp_before_c, temp_after_c, sensor, idle_temp_c, within_c,
    reached (to_idle: whether the band was reached within max_s), reason (when not done or not reached)}."""
    before, sensor = temp()
    rec: dict[str, Any] = {"done": False, "mode": "to_idle" if settings.cooldown_within_c is not None else "fixed",
                           "max_s": settings.cooldown_s, "waited_s": 0.0, "temp_before_c": before, "sensor": sensor}
    if settings.cooldown_s <= 0:
        rec["reason"] = "no cool-down asked for"
        return rec
    t0 = clock()
    if rec["mode"] == "fixed":
        sleep(settings.cooldown_s)
    else:
        rec.update(idle_temp_c=settings.idle_temp_c, within_c=settings.cooldown_within_c, reached=False)
        if before is None:
            rec["reason"] = "no temperature sensor: waited the longest cool-down instead"
            sleep(settings.cooldown_s)
        elif settings.idle_temp_c is None:
            rec["reason"] = "no idle temperature from the run's first entry: waited the longest cool-down instead"
            sleep(settings.cooldown_s)
        else:
            goal = settings.idle_temp_c + settings.cooldown_within_c
            now = before
            while now is not None and now > goal and clock() - t0 < settings.cooldown_s:
                sleep(min(poll_s, max(settings.cooldown_s - (clock() - t0), 0.0)))
                now, _ = temp()
            rec["reached"] = now is not None and now <= goal
            if not rec["reached"]:
                rec["reason"] = (f"still above {goal:g} C after {settings.cooldown_s:g} s" if now is not None
                                 else "the temperature sensor stopped answering")
    rec["waited_s"] = round(clock() - t0, 3)
    rec["temp_after_c"] = temp()[0]
    rec["done"] = True
    return rec


def soak(run_once: Callable[[], Any], seconds: float, *, temp: TempReader = read_temp,
         clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Run `run_once` untimed for `seconds` (at least once); returns {done, s, inferences, temp_before_c,
    temp_after_c, sensor}."""
    before, sensor = temp()
    if seconds <= 0:
        return {"done": False, "s": 0.0, "inferences": 0, "temp_before_c": before, "temp_after_c": before,
                "sensor": sensor, "reason": "no soak asked for"}
    n, t0 = 0, clock()
    while n == 0 or clock() - t0 < seconds:
        run_once()
        n += 1
    return {"done": True, "s": round(clock() - t0, 3), "inferences": n, "temp_before_c": before,
            "temp_after_c": temp()[0], "sensor": sensor}


# What result.json's steady_state may hold, section by section (the host keeps nothing else: a board is untrusted).
_NUMBERS = {"cooldown": ("waited_s", "max_s", "temp_before_c", "temp_after_c", "idle_temp_c", "within_c"),
            "idle": ("s", "temp_c"), "soak": ("s", "inferences", "temp_before_c", "temp_after_c")}
_FLAGS = {"cooldown": ("done", "reached"), "idle": ("done",), "soak": ("done",)}
_MODES = ("fixed", "to_idle")
_REASON_CHARS = 200


def clean_record(value: Any) -> dict[str, Any] | None:
    """result.json's `steady_state` as a board sent it, kept only where well-formed: known sections and fields,
    finite numbers (temperatures in the plausible range), booleans, a sensor or probe name that is a plain
    identifier, a reason cut to one line of at most 200 characters. Anything else is dropped (None), so nothing a
    board sends becomes a path, markup or a crash on the host. Not a record at all: None."""
    import math
    import re

    from harness.jobs import TEMP_RANGE_C

    if not isinstance(value, dict):
        return None
    ident = re.compile(r"[A-Za-z0-9_.-]{1,64}")

    def number(key: str, v: Any) -> Any:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return None
        if key.endswith("_c") and key != "within_c":
            return v if TEMP_RANGE_C[0] <= v <= TEMP_RANGE_C[1] else None
        return v if v >= 0 else None

    out: dict[str, Any] = {}
    for section, numbers in _NUMBERS.items():
        raw = value.get(section)
        if not isinstance(raw, dict):
            continue
        rec: dict[str, Any] = {k: number(k, raw.get(k)) for k in numbers}
        rec.update({k: raw.get(k) if isinstance(raw.get(k), bool) else None for k in _FLAGS[section]})
        sensor = raw.get("sensor")
        if isinstance(sensor, str) and ident.fullmatch(sensor):
            rec["sensor"] = sensor
        if section == "cooldown":
            rec["mode"] = raw.get("mode") if raw.get("mode") in _MODES else None
        if section == "idle" and isinstance(raw.get("power_mw"), dict):
            rec["power_mw"] = {k: number(k, v) for k, v in raw["power_mw"].items()
                               if isinstance(k, str) and ident.fullmatch(k)}
        reason = raw.get("reason")
        if isinstance(reason, str) and reason:
            rec["reason"] = (reason.splitlines() or [""])[0][:_REASON_CHARS]
        out[section] = rec
    fans = value.get("fan")
    if isinstance(fans, dict):  # the fan at the entry's start and after its timed window (harness/trackers/fan.py)
        from harness.trackers.fan import clean as clean_fan

        out["fan"] = {when: clean_fan(fans.get(when)) for when in ("start", "end")}
    return out
