"""Telemetry: parsers on recorded tool output, probes end to end through fake commands on PATH, energy."""

from __future__ import annotations

import json
import stat
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from harness.errors import UnknownIdError
from harness.trackers import nvidia_smi, psutil_probe, tegrastats, vcgencmd
from harness.trackers.telemetry import TelemetryWindow, energy_mj_per_inference
from harness.trackers.validity import assess

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telemetry"


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


# ---------------------------------------------------------------- parsers on recorded output

def test_tegrastats_nano_jp4():
    readings = [tegrastats.parse_line(line) for line in lines("tegrastats_nano_jp4.txt")]
    first, last = readings[0], readings[-1]
    assert first["ram_used_mb"] == 2159 and first["ram_total_mb"] == 3964
    assert first["pom_5v_in_mw"] == 2459 and first["pom_5v_cpu_mw"] == 363
    assert first["cpu_freq_mhz"] == 1479 and first["cpu_util_pct"] == pytest.approx(5.0)
    assert first["gpu_freq_mhz"] == 921 and first["emc_freq_mhz"] == 1600
    assert first["cpu_temp_c"] == 39 and first["gpu_temp_c"] == 35.5 and first["thermal_temp_c"] == 36.75
    assert "pmic_temp_c" not in first  # PMIC@100C is a placeholder, not a sensor
    assert last["cpu_cores_online"] == 2 and last["cpu_freq_mhz"] == 1224  # "off" cores skipped


def test_tegrastats_xavier_nx_jp5_with_timestamp_and_mw_units():
    r = tegrastats.parse_line(lines("tegrastats_xavier_nx_jp5.txt")[1])
    assert r["vdd_in_mw"] == 6121 and r["vdd_cpu_gpu_cv_mw"] == 2288 and r["vdd_soc_mw"] == 1496
    assert r["gpu_freq_mhz"] == 114  # GR3D_FREQ 0%@[114]
    assert r["cpu_freq_mhz"] == 1420 and r["cpu_cores_online"] == 6
    assert r["gpu_temp_c"] == 34.5


def test_tegrastats_orin_nano_jp6_lowercase_sensors():
    r = tegrastats.parse_line(lines("tegrastats_orin_nano_jp6.txt")[0])
    assert r["gpu_temp_c"] == 40.5 and r["tj_temp_c"] == 46.187 and r["cpu_temp_c"] == 46.187
    assert r["gpu_freq_mhz"] == 305 and r["emc_freq_mhz"] == 2133
    assert r["vdd_in_mw"] == 4365


def test_tegrastats_agx_orin_power_gated_sensors_dropped():
    r = tegrastats.parse_line(lines("tegrastats_agx_orin_jp5_gpu_off.txt")[0])
    assert "gpu_temp_c" not in r and "cv0_temp_c" not in r  # -256C = sensor off
    assert r["gpu_freq_mhz"] == 0  # "0%@[0,0]", two GPCs
    assert r["cpu_cores_online"] == 4
    assert not set(tegrastats.TOTAL_POWER_FIELDS) & set(r)  # AGX Orin has no board-input rail in tegrastats


def test_tegrastats_rejects_non_tegrastats_line():
    with pytest.raises(ValueError, match="not a tegrastats line"):
        tegrastats.parse_line(lines("tegrastats_bad.txt")[0])


def test_nvpmodel_and_jetson_clocks():
    assert tegrastats.parse_nvpmodel((FIXTURES / "nvpmodel_q_orin_nano.txt").read_text()) == {
        "power_mode": "15W", "power_mode_id": 0}
    assert tegrastats.parse_nvpmodel((FIXTURES / "nvpmodel_q_nano_5w.txt").read_text()) == {
        "power_mode": "5W", "power_mode_id": 1}
    locked = tegrastats.parse_jetson_clocks((FIXTURES / "jetson_clocks_show_nano.txt").read_text())
    assert locked["clocks_locked"] is True
    assert locked["clocks"]["gpu"]["max_mhz"] == pytest.approx(921.6)
    assert locked["clocks"]["cpu0"]["cur_mhz"] == pytest.approx(1479.0)
    default = tegrastats.parse_jetson_clocks((FIXTURES / "jetson_clocks_show_orin_nano_default.txt").read_text())
    assert default["clocks_locked"] is False and len([k for k in default["clocks"] if k.startswith("cpu")]) == 6
    with pytest.raises(ValueError):
        tegrastats.parse_nvpmodel("nvpmodel: command failed")
    with pytest.raises(ValueError):
        tegrastats.parse_jetson_clocks("Permission denied")


def test_vcgencmd_parsers_and_throttle_bits():
    assert vcgencmd.parse_throttled(lines("vcgencmd_get_throttled_undervolt.txt")[0]) == 0x50005
    assert vcgencmd.decode_throttled(0x50005) == [
        "under_voltage_now", "throttled_now", "under_voltage_occurred", "throttled_occurred"]
    assert vcgencmd.decode_throttled(0x80008) == ["soft_temp_limit_now", "soft_temp_limit_occurred"]
    assert vcgencmd.decode_throttled(0) == []
    assert vcgencmd.parse_temp(lines("vcgencmd_measure_temp.txt")[0]) == 48.3
    assert vcgencmd.parse_clock_mhz(lines("vcgencmd_measure_clock_arm.txt")[0]) == pytest.approx(1500.398464)
    assert vcgencmd.read_model(FIXTURES / "rpi4_device_tree_model") == "Raspberry Pi 4 Model B Rev 1.4"
    assert vcgencmd.read_model(FIXTURES / "does-not-exist") is None
    with pytest.raises(ValueError):
        vcgencmd.parse_throttled(lines("vcgencmd_vchi_failed.txt")[0])


def test_nvidia_smi_parser_on_h100_capture():
    name, r = nvidia_smi.parse_line(lines("nvidia_smi_h100.csv")[0])
    assert name == "NVIDIA H100 80GB HBM3"
    assert r == {"gpu_temp_c": 33.0, "gpu_power_mw": pytest.approx(112660.0), "sm_freq_mhz": 375.0,
                 "throttle_reasons": 1.0}
    assert nvidia_smi.decode_throttle_reasons(0x1) == ["gpu_idle"]
    _, partial = nvidia_smi.parse_line("Jetson-like GPU, 41, [N/A], 1300, [Not Supported]")
    assert partial == {"gpu_temp_c": 41.0, "sm_freq_mhz": 1300.0}
    with pytest.raises(ValueError, match="5 comma-separated"):
        nvidia_smi.parse_line(lines("nvidia_smi_bad_field.txt")[0])


# ---------------------------------------------------------------- energy

def test_energy_constant_power():
    p = np.array([[0.0, 2000.0], [1.0, 2000.0], [2.0, 2000.0]])
    assert energy_mj_per_inference(p, 2.0, 100) == pytest.approx(40.0)  # 2 W x 2 s = 4 J over 100


def test_energy_interpolates_window_edges():
    # ramp 1000 -> 3000 mW between t=-1 and t=3; window [0, 2] sees 1500 -> 2500 mW: mean 2000 mW x 2 s
    p = np.array([[-1.0, 1000.0], [3.0, 3000.0]])
    assert energy_mj_per_inference(p, 2.0, 4) == pytest.approx(1000.0)
    # one reading: held constant over the window
    assert energy_mj_per_inference(np.array([[0.5, 500.0]]), 2.0, 1) == pytest.approx(1000.0)


def test_energy_none_without_data():
    assert energy_mj_per_inference(np.empty((0, 2)), 1.0, 10) is None
    assert energy_mj_per_inference(np.array([[0.0, 1.0]]), 1.0, 0) is None


# ---------------------------------------------------------------- probes through fake commands on PATH

def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    """A python script named `name` in bin_dir: the process boundary the probes talk to."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\nimport sys, time\nFIX = {str(FIXTURES)!r}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))  # only the fakes: real tools must not leak in
    return d


FAKE_TEGRASTATS = """
    interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000
    rows = open(FIX + "/{fixture}").read().splitlines()
    i = 0
    while True:
        print(rows[i % len(rows)], flush=True)
        i += 1
        time.sleep(interval)
"""


def test_tegrastats_probe_end_to_end(bin_dir):
    fake_tool(bin_dir, "tegrastats", FAKE_TEGRASTATS.format(fixture="tegrastats_orin_nano_jp6.txt"))
    fake_tool(bin_dir, "nvpmodel", "print(open(FIX + '/nvpmodel_q_orin_nano.txt').read(), end='')")
    with TelemetryWindow(["tegrastats"], interval_s=0.05) as tw:
        time.sleep(0.4)
    rep = tw.reports["tegrastats"]
    assert rep.available and rep.reason is None
    assert len(rep.samples) >= 3
    assert rep.info["nvpmodel"] == {"power_mode": "15W", "power_mode_id": 0}
    assert rep.info["jetson_clocks"] == {"available": False, "reason": "jetson_clocks not found on PATH"}
    summary = tw.to_dict()["tegrastats"]["summary"]
    assert summary["fields"]["vdd_in_mw"]["min"] == 4365 and summary["fields"]["vdd_in_mw"]["max"] == 6694
    assert summary["fields"]["cpu_freq_mhz"]["min"] == 729
    json.dumps(tw.to_dict())
    energy = tw.energy_mj_per_inference(10)
    assert 4365 * tw.window_s / 10 <= energy <= 6694 * tw.window_s / 10
    # idle 729 MHz -> loaded 1510 MHz within the window is DVFS ramp-up: not a valid measurement
    verdict = assess({"count": 100, "duration_s": 2.0}, min_duration_s=1, min_count=100, telemetry=tw.to_dict())
    assert any("cpu_freq_mhz varied 729-1510" in r for r in verdict["reasons"])


def test_tegrastats_unparseable_output(bin_dir):
    fake_tool(bin_dir, "tegrastats", FAKE_TEGRASTATS.format(fixture="tegrastats_bad.txt"))
    with TelemetryWindow(["tegrastats"], interval_s=0.05) as tw:
        pass
    rep = tw.reports["tegrastats"]
    assert not rep.available
    assert rep.reason == ("tegrastats: unparseable output: "
                          "'Error: cannot open /sys/kernel/debug/bpmp/debug/clk/emc/rate: Permission denied'")


def test_tegrastats_exits_with_error(bin_dir):
    fake_tool(bin_dir, "tegrastats", "sys.stderr.write('tegrastats: unsupported board\\n'); sys.exit(1)")
    with TelemetryWindow(["tegrastats"], interval_s=0.05) as tw:
        pass
    assert tw.reports["tegrastats"].reason == "tegrastats exited: tegrastats: unsupported board"


FAKE_VCGENCMD = """
    from pathlib import Path
    state = Path(sys.argv[0]).with_suffix(".calls")
    args = sys.argv[1:]
    if args == ["get_throttled"]:
        n = int(state.read_text()) if state.exists() else 0
        state.write_text(str(n + 1))
        print(open(FIX + ("/vcgencmd_get_throttled_ok.txt" if n == 0 else "/vcgencmd_get_throttled_undervolt.txt")).read(), end="")
    elif args == ["measure_temp"]:
        print(open(FIX + "/vcgencmd_measure_temp.txt").read(), end="")
    elif args == ["measure_clock", "arm"]:
        print(open(FIX + "/vcgencmd_measure_clock_arm.txt").read(), end="")
    else:
        sys.exit(2)
"""


def test_vcgencmd_probe_sees_throttling_start_during_window(bin_dir):
    fake_tool(bin_dir, "vcgencmd", FAKE_VCGENCMD)
    with TelemetryWindow(["vcgencmd"], interval_s=0.05) as tw:
        time.sleep(0.15)
    d = tw.to_dict()["vcgencmd"]
    assert d["available"] is True
    s = d["summary"]
    assert s["fields"]["soc_temp_c"]["max"] == 48.3
    assert s["fields"]["arm_freq_mhz"]["min"] == pytest.approx(1500.398464)
    assert s["throttled_changed"] is True and s["throttled_now_during_window"] is True
    assert s["throttled_new_during_window"] == ["under_voltage_occurred", "throttled_occurred"]
    verdict = assess({"count": 100, "duration_s": 2.0}, min_duration_s=1, min_count=100, telemetry=tw.to_dict())
    assert verdict["status"] == "INVALID"
    assert "vcgencmd: throttle flags set during the window (under_voltage_occurred, throttled_occurred)" in verdict["reasons"]


def test_vcgencmd_failing_command(bin_dir):
    fake_tool(bin_dir, "vcgencmd", "print(open(FIX + '/vcgencmd_vchi_failed.txt').read(), end=''); sys.exit(255)")
    with TelemetryWindow(["vcgencmd"]) as tw:
        pass
    assert tw.reports["vcgencmd"].reason == "vcgencmd get_throttled exited with code 255: VCHI initialization failed"


def test_nvidia_smi_probe_end_to_end(bin_dir):
    fake_tool(bin_dir, "nvidia-smi", """
        from pathlib import Path
        assert "--format=csv,noheader,nounits" in sys.argv and "-i" in sys.argv
        state = Path(sys.argv[0]).with_suffix(".calls")
        n = int(state.read_text()) if state.exists() else 0
        state.write_text(str(n + 1))
        rows = open(FIX + "/nvidia_smi_h100.csv").read().splitlines()
        print(rows[min(n, len(rows) - 1)])
    """)
    with TelemetryWindow(["nvidia-smi"], interval_s=0.05) as tw:
        time.sleep(0.3)
    rep = tw.reports["nvidia-smi"]
    assert rep.available and rep.info["name"] == "NVIDIA H100 80GB HBM3"
    s = rep.summary()
    assert s["fields"]["gpu_power_mw"]["first"] == pytest.approx(112660.0)
    assert s["fields"]["sm_freq_mhz"]["max"] == 375 and s["fields"]["sm_freq_mhz"]["min"] == 345
    assert s["throttle_flags"] == ["gpu_idle"] and s["throttled_now_during_window"] is False
    assert 71850 * tw.window_s <= tw.energy_mj_per_inference(1) <= 112660 * tw.window_s


def test_nvidia_smi_rejected_query(bin_dir):
    fake_tool(bin_dir, "nvidia-smi", "print(open(FIX + '/nvidia_smi_bad_field.txt').read(), end=''); sys.exit(2)")
    with TelemetryWindow(["nvidia-smi"]) as tw:
        pass
    assert tw.reports["nvidia-smi"].reason.endswith('exited with code 2: Field "bogus.field" is not a valid field to query.')


@pytest.mark.parametrize("tool", ["tegrastats", "vcgencmd", "nvidia-smi"])
def test_missing_tool_is_unavailable_not_an_error(bin_dir, tool):
    with TelemetryWindow([tool]) as tw:
        pass
    assert tw.to_dict()[tool] == {"available": False, "reason": f"{tool} not found on PATH",
                                  "info": tw.reports[tool].info, "summary": {"samples": 0, "fields": {}}}
    assert tw.energy_mj_per_inference(10) is None


def test_unknown_probe_name():
    with pytest.raises(UnknownIdError, match="unknown telemetry probe 'tegrastat'; valid: cpufreq, hwmon, meter, nvidia-smi, pi5-pmic, psutil"):
        TelemetryWindow(["tegrastat"])


# ---------------------------------------------------------------- psutil probe

def test_thermal_zone_reader(tmp_path):
    for i, (kind, milli) in enumerate([("cpu-thermal", "48300"), ("gpu_thermal", "41000")]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    (tmp_path / "thermal_zone9").mkdir()  # unreadable zone: skipped
    assert psutil_probe.thermal_zone_temps(tmp_path) == {"cpu_thermal_temp_c": 48.3, "gpu_thermal_temp_c": 41.0}


def test_psutil_probe_on_this_machine():
    with TelemetryWindow(["psutil"], interval_s=0.05) as tw:
        time.sleep(0.12)
    rep = tw.reports["psutil"]
    has_sensors = bool(psutil.sensors_temperatures() or psutil_probe.thermal_zone_temps())
    assert rep.available is has_sensors
    if not has_sensors:
        assert rep.reason == "no temperature sensors exposed"
    assert len(rep.samples) >= 2  # start + end readings at least, even when thermally blind
    freq = psutil.cpu_freq()
    if freq is not None and freq.current > 0:
        assert "cpu_freq_mhz" in rep.summary()["fields"]
