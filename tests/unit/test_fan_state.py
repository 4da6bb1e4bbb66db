"""Fan state where a board exposes it (issue 21), read from fake sysfs trees laid out as the real ones:

- Raspberry Pi 5 with the Active Cooler: the kernel's pwm-fan driver (drivers/hwmon/pwm-fan.c) registers the hwmon
  device `pwmfan` (at /sys/devices/platform/cooling_fan/hwmon/hwmon2 on Raspberry Pi OS, linked from
  /sys/class/hwmon/hwmon2; `fan1_input` is the tachometer's RPM, `pwm1` the duty 0-255) and the thermal cooling
  device type `pwm-fan` (/sys/class/thermal/cooling_device0, `cur_state` 0-4, `max_state` 4: the firmware's
  50/60/67.5/75 C steps, as Raspberry Pi users read and set them, e.g.
  https://raspberrypi.stackexchange.com/questions/145514). The SoC's sensor is hwmon0 `cpu_thermal`, the RP1's
  ADC hwmon1 `rp1_adc`: no fan files, so they must not count.
- Raspberry Pi 4 with the case fan on the `gpio-fan` overlay: drivers/hwmon/gpio-fan.c names its hwmon device
  `gpio_fan` (fan1_input: the RPM of the current speed step, fan1_target, pwm1) and its cooling device `gpio-fan`
  (states 0-1, the overlay's two-entry speed map 0/5000 RPM). Beside it a `cpufreq-cpu0` cooling device, which
  throttles clocks and is not a fan.
- A board without a fan: only `cpu_thermal` and no fan cooling device: "not readable on this board".

Values are typical of the boards (Active Cooler at step 2, about 3000 RPM); the layouts are the drivers'.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from device_helpers import job_folder
from harness.device import steady
from harness.device.worker import run_job
from harness.launchers import trust
from harness.report import device_state
from harness.trackers import cpufreq, fan, psutil_probe


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def pi5_tree(root: Path) -> Path:
    return _write(root, {
        "hwmon/hwmon0/name": "cpu_thermal", "hwmon/hwmon0/temp1_input": "52650",
        "hwmon/hwmon1/name": "rp1_adc", "hwmon/hwmon1/in1_input": "1470",
        "hwmon/hwmon2/name": "pwmfan", "hwmon/hwmon2/fan1_input": "3054", "hwmon/hwmon2/pwm1": "115",
        "hwmon/hwmon2/pwm1_enable": "2",
        "thermal/thermal_zone0/type": "cpu-thermal", "thermal/thermal_zone0/temp": "52650",
        "thermal/cooling_device0/type": "pwm-fan", "thermal/cooling_device0/cur_state": "2",
        "thermal/cooling_device0/max_state": "4",
    })


def pi4_gpio_fan_tree(root: Path) -> Path:
    return _write(root, {
        "hwmon/hwmon0/name": "cpu_thermal", "hwmon/hwmon0/temp1_input": "61835",
        "hwmon/hwmon1/name": "gpio_fan", "hwmon/hwmon1/fan1_input": "5000", "hwmon/hwmon1/fan1_target": "5000",
        "hwmon/hwmon1/fan1_min": "0", "hwmon/hwmon1/fan1_max": "5000", "hwmon/hwmon1/pwm1": "255",
        "thermal/thermal_zone0/type": "cpu-thermal", "thermal/thermal_zone0/temp": "61835",
        "thermal/cooling_device0/type": "cpufreq-cpu0", "thermal/cooling_device0/cur_state": "0",
        "thermal/cooling_device0/max_state": "3",
        "thermal/cooling_device1/type": "gpio-fan", "thermal/cooling_device1/cur_state": "1",
        "thermal/cooling_device1/max_state": "1",
    })


def fanless_tree(root: Path) -> Path:
    return _write(root, {"hwmon/hwmon0/name": "cpu_thermal", "hwmon/hwmon0/temp1_input": "48300",
                         "thermal/thermal_zone0/type": "cpu-thermal", "thermal/thermal_zone0/temp": "48300"})


def test_pi5_active_cooler_rpm_pwm_and_cooling_state(tmp_path):
    root = pi5_tree(tmp_path)
    state = fan.fan_state(root / "hwmon", root / "thermal")
    assert state == {"readable": True, "fans": [
        {"source": "hwmon", "device": "pwmfan", "fan": "fan1", "rpm": 3054, "pwm_pct": pytest.approx(45.098, abs=1e-3)},
        {"source": "cooling_device", "device": "pwm-fan", "state": 2, "max_state": 4}]}
    assert fan.describe(state) == "pwmfan fan1 3054 rpm (45% PWM); pwm-fan state 2/4"


def test_pi4_gpio_fan_and_a_clock_cooling_device_that_is_not_a_fan(tmp_path):
    root = pi4_gpio_fan_tree(tmp_path)
    state = fan.fan_state(root / "hwmon", root / "thermal")
    assert [f["device"] for f in state["fans"]] == ["gpio_fan", "gpio-fan"]
    assert state["fans"][0]["rpm"] == 5000 and state["fans"][1] == {
        "source": "cooling_device", "device": "gpio-fan", "state": 1, "max_state": 1}


def test_no_fan_is_not_readable_on_this_board(tmp_path):
    root = fanless_tree(tmp_path)
    assert fan.fan_state(root / "hwmon", root / "thermal") == {"readable": False,
                                                               "reason": "not readable on this board"}
    assert fan.fan_state(tmp_path / "absent", tmp_path / "absent") == {"readable": False,
                                                                         "reason": fan.NOT_READABLE}


def test_hwmon_devices_in_numeric_order_and_unreadable_values_skipped(tmp_path):
    root = _write(tmp_path, {"hwmon/hwmon10/name": "nct6775", "hwmon/hwmon10/fan2_input": "900",
                             "hwmon/hwmon10/fan1_input": "", "hwmon/hwmon2/name": "pwmfan",
                             "hwmon/hwmon2/fan1_input": "3054", "hwmon/hwmon2/pwm1": "999"})
    fans = fan.hwmon_fans(root / "hwmon")
    assert [(f["device"], f["fan"], f["rpm"]) for f in fans] == [("pwmfan", "fan1", 3054), ("nct6775", "fan2", 900)]
    assert "pwm_pct" not in fans[0]  # a duty outside 0-255 is no duty


def test_the_cpufreq_probe_reads_the_same_fans(tmp_path):
    root = pi5_tree(tmp_path)
    _write(root, {f"cpu/cpu{i}/cpufreq/scaling_governor": "performance" for i in range(4)})
    probe = cpufreq.CpufreqProbe(cpu_root=root / "cpu", hwmon_root=root / "hwmon")
    probe.start(10.0)
    probe.stop()
    assert probe.info["fan"] == ["pwmfan fan1"]
    assert probe.read()["fan0_rpm"] == 3054.0


def test_the_worker_records_the_fan_beside_the_temperature_and_the_host_keeps_it(tmp_path, monkeypatch):
    root = pi5_tree(tmp_path / "sys")
    monkeypatch.setenv(fan.HWMON_ROOT_ENV, str(root / "hwmon"))
    monkeypatch.setenv(psutil_probe.THERMAL_ROOT_ENV, str(root / "thermal"))
    job, _ = job_folder(tmp_path / "in", n=3)
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    s = res.steady_state
    assert s["cooldown"]["temp_before_c"] == 52.65  # the SoC temperature, read from the same tree
    assert s["fan"]["start"] == s["fan"]["end"] == fan.fan_state(root / "hwmon", root / "thermal")
    kept = steady.clean_record(trust.read_result(tmp_path / "out", job, where="local worker").steady_state)
    assert kept["fan"]["start"]["fans"][1] == {"source": "cooling_device", "device": "pwm-fan", "state": 2,
                                               "max_state": 4}


def test_a_fan_record_from_a_board_is_cleaned():
    rec = steady.clean_record({"fan": {
        "start": {"readable": True, "fans": [
            {"source": "hwmon", "device": "<b>pwmfan</b>", "fan": "fan1", "rpm": 3054},
            {"source": "hwmon", "device": "pwmfan", "fan": "../etc", "rpm": -5, "pwm_pct": 300},
            {"source": "cooling_device", "device": "pwm-fan", "state": True, "max_state": 4},
            {"source": "/dev/sda", "device": "x"}, "not a fan"] + [
            {"source": "cooling_device", "device": "pwm-fan", "state": 1}] * 20},
        "end": {"readable": "yes"}}})
    start = rec["fan"]["start"]
    assert start["fans"][0] == {"source": "hwmon", "device": "pwmfan", "fan": None, "rpm": None}
    assert start["fans"][1] == {"source": "cooling_device", "device": "pwm-fan", "state": None, "max_state": 4}
    assert len(start["fans"]) == fan.MAX_FANS
    assert rec["fan"]["end"] is None
    assert steady.clean_record({"fan": {"start": {"readable": False, "reason": "<script>"}}})["fan"]["start"] == {
        "readable": False, "reason": fan.NOT_READABLE}


def test_the_report_shows_governor_and_fan_in_the_device_state(tmp_path):
    import copy

    from harness.report.html import render_html, render_markdown
    from harness.results.store import Run
    from helpers_results import make_run

    root = pi5_tree(tmp_path / "sys")
    run = make_run(tmp_path / "results", target="rpi")
    doc = copy.deepcopy(run.doc)
    x = next(e for e in doc["entries"] if e["entry"].endswith("onnx-fp32"))
    x["speed"].setdefault("telemetry", {})["cpufreq"] = {"available": True, "reason": None, "info": {}, "summary": {
        "samples": 4, "fields": {}, "governors": {f"cpu{i}": ["performance"] for i in range(4)}}}
    start = fan.fan_state(root / "hwmon", root / "thermal")
    (root / "thermal/cooling_device0/cur_state").write_text("3\n")
    (root / "hwmon/hwmon2/fan1_input").write_text("4410\n")
    x["speed"]["device_state"] = steady.clean_record({"fan": {"start": start,
                                                              "end": fan.fan_state(root / "hwmon", root / "thermal")}})
    edited = Run(path=run.path, doc=doc)
    for text in (render_html([edited]), render_markdown([edited])):
        assert "Device state" in text and "performance" in text
        assert ("pwmfan fan1 3054 rpm (45% PWM); pwm-fan state 2/4 → pwmfan fan1 4410 rpm (45% PWM); pwm-fan state "
                "3/4") in text
    assert device_state._fan(None) == "not recorded"
    assert device_state._fan({"start": {"readable": False}, "end": {"readable": False}}) == fan.NOT_READABLE
