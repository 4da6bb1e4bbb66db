"""Power probes (hwmon INA2xx/INA3221, Pi 5 PMIC), the cpufreq governor check and energy with its interval.

The sysfs trees are laid out as the kernel's hwmon ABI documents them (tests/fixtures/telemetry/README.md); the
PMIC text is the Pi 5 firmware's format. Known constant power must give exactly the expected energy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from harness.errors import UnavailableError, UnknownIdError, UsageError
from harness.trackers import cpufreq, hwmon, telemetry, validity, vcgencmd

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telemetry"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text + "\n")
    return root


def ina226_tree(root: Path, uw: int = 4_200_000) -> Path:
    """An INA226 on a Pi's 5 V input (ina2xx driver: in0 shunt mV, in1 bus mV, curr1 mA, power1 µW)."""
    return _write(root, {"hwmon0/name": "cpu_thermal", "hwmon0/temp1_input": "51000",
                         "hwmon3/name": "ina226", "hwmon3/in0_input": "2", "hwmon3/in1_input": "5080",
                         "hwmon3/curr1_input": "826", "hwmon3/power1_input": str(uw)})


def ina3221_tree(root: Path) -> Path:
    """A Jetson Orin Nano's INA3221 (labels as its device tree names them; no power files)."""
    return _write(root, {"hwmon1/name": "ina3221",
                         "hwmon1/in1_label": "VDD_IN", "hwmon1/in1_input": "5072", "hwmon1/curr1_input": "1184",
                         "hwmon1/in2_label": "VDD_CPU_GPU_CV", "hwmon1/in2_input": "5064",
                         "hwmon1/curr2_input": "312",
                         "hwmon1/in3_label": "VDD_SOC", "hwmon1/in3_input": "5064", "hwmon1/curr3_input": "448",
                         "hwmon1/in4_input": "40", "hwmon1/in5_input": "10", "hwmon1/in6_input": "14"})


def test_ina226_power_input_is_the_total(tmp_path):
    probe = hwmon.HwmonProbe(root=ina226_tree(tmp_path), rails="")
    probe.start(10.0)
    probe.stop()
    _, r = probe.samples[-1]
    assert r["hwmon_power_mw"] == pytest.approx(4200.0)  # 4 200 000 µW
    assert probe.info["total_from"].startswith("the only power channel")


def test_ina3221_total_is_the_input_rail_not_the_sum(tmp_path):
    probe = hwmon.HwmonProbe(root=ina3221_tree(tmp_path), rails="")
    probe.start(10.0)
    probe.stop()
    _, r = probe.samples[-1]
    assert r["hwmon_power_mw"] == pytest.approx(5072 * 1184 / 1000)
    assert r["hwmon_ina3221_vdd_soc_mw"] == pytest.approx(5064 * 448 / 1000)
    assert "VDD_IN" in probe.info["total_from"]


def test_ambiguous_rails_give_no_total_until_named(tmp_path):
    root = ina226_tree(tmp_path)
    _write(root, {"hwmon4/name": "ina219", "hwmon4/power1_input": "1000000"})
    probe = hwmon.HwmonProbe(root=root, rails="")
    probe.start(10.0)
    probe.stop()
    assert "hwmon_power_mw" not in probe.samples[-1][1]
    assert "BENCH_HWMON_RAILS" in probe.extra_summary()["no_total"]
    named = hwmon.HwmonProbe(root=root, rails="ina226,ina219")
    named.start(10.0)
    named.stop()
    assert named.samples[-1][1]["hwmon_power_mw"] == pytest.approx(5200.0)
    with pytest.raises(UnavailableError, match="names no channel"):
        hwmon.HwmonProbe(root=root, rails="ina3221:VDD_IN").start(10.0)


def test_no_power_device_is_unavailable_not_an_error(tmp_path):
    _write(tmp_path, {"hwmon0/name": "cpu_thermal", "hwmon0/temp1_input": "51000"})
    with telemetry.TelemetryWindow([]) as tw:
        pass
    tw.probes["hwmon"] = hwmon.HwmonProbe(root=tmp_path)
    with pytest.raises(UnavailableError, match="no hwmon device reports power"):
        tw.probes["hwmon"].start(1.0)


def test_constant_power_gives_the_expected_energy_and_interval(tmp_path, monkeypatch):
    monkeypatch.setenv(hwmon.ROOT_ENV, str(ina226_tree(tmp_path, uw=3_000_000)))
    monkeypatch.setenv(hwmon.RAILS_ENV, "")
    with telemetry.TelemetryWindow(["hwmon"], interval_s=0.01, idle_s=0.05) as tw:
        time.sleep(0.3)
    n = 150
    energy = tw.energy_mj_per_inference(n)
    assert energy == pytest.approx(3000.0 * tw.window_s / n)  # mW x s / n = mJ per inference
    power = tw.to_dict()["hwmon"]["summary"]["power"]
    assert power["mean_mw"] == pytest.approx(3000.0)
    assert power["idle_mw"] == pytest.approx(3000.0)
    assert power["ci_mw"] == pytest.approx([3000.0, 3000.0])


def test_power_stats_batch_means_and_t_table():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df, q in telemetry.T_975.items():
        assert q == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-8)
    t = np.linspace(0, 10, 101)
    p = np.where(t < 5, 1000.0, 2000.0)
    s = telemetry.power_stats(np.c_[t, p], 10.0)
    means = np.array(s["block_means_mw"])
    half = scipy_stats.t.ppf(0.975, 4) * means.std(ddof=1) / np.sqrt(5)
    assert s["ci_mw"] == pytest.approx([s["mean_mw"] - half, s["mean_mw"] + half])
    sparse = telemetry.power_stats(np.array([[0.0, 1.0], [9.0, 1.0]]), 10.0)
    assert sparse["ci_mw"] is None and "sparsest" in sparse["interval_reason"]


def test_pi5_pmic_parse_and_total():
    text = (FIXTURES / "vcgencmd_pmic_read_adc_pi5.txt").read_text()
    rails = vcgencmd.parse_pmic_read_adc(text)
    assert rails["VDD_CORE"] == {"A": 0.70758, "V": 0.881713}
    assert "A" not in rails["EXT5V"] and "BATT" in rails
    mw = vcgencmd.pmic_rails_mw(rails)
    assert len(mw) == 12 and "EXT5V" not in mw
    # the sum of V x I over the 12 paired rails, computed by hand from the fixture's lines
    assert sum(mw.values()) == pytest.approx(1000 * (
        0.0 * 3.69915 + 0.056598 * 3.298132 + 0.1649346 * 1.799261 + 0.0214704 * 1.110508 + 0.0 * 0.6049805
        + 0.1854 * 1.103182 + 0.334776 * 0.800732 + 0.70758 * 0.881713 + 0.0004884 * 3.308188
        + 0.00030525 * 3.3072 + 0.004884 * 0.800732 + 0.021978 * 5.15806))
    with pytest.raises(ValueError):
        vcgencmd.parse_pmic_read_adc("error=1 error_msg=\"Command not registered\"")


def cpu_tree(root: Path, governor: str) -> Path:
    files = {}
    for i in range(4):
        files[f"cpu/cpu{i}/cpufreq/scaling_governor"] = governor
        files[f"cpu/cpu{i}/cpufreq/scaling_cur_freq"] = "2400000"
    files["hwmon/hwmon2/name"] = "cooling_fan"
    files["hwmon/hwmon2/fan1_input"] = "3054"
    files["hwmon/hwmon2/pwm1"] = "115"
    return _write(root, files)


def test_governor_not_performance_makes_the_timing_invalid(tmp_path):
    root = cpu_tree(tmp_path, "ondemand")
    probe = cpufreq.CpufreqProbe(cpu_root=root / "cpu", hwmon_root=root / "hwmon")
    probe.start(10.0)
    probe.stop()
    report = probe.report(probe.samples[0][0]).to_dict()
    r = probe.samples[-1][1]
    assert r["cpu3_freq_mhz"] == 2400.0 and r["fan0_rpm"] == 3054.0
    assert r["fan0_pwm_pct"] == pytest.approx(115 * 100 / 255)
    verdict = validity.assess({"count": 500, "duration_s": 5.0}, min_duration_s=1, min_count=10,
                              telemetry={"cpufreq": report})
    assert verdict["status"] == "INVALID"
    assert any("governor ondemand" in r for r in verdict["reasons"])
    allowed = cpufreq.CpufreqProbe(cpu_root=root / "cpu", hwmon_root=root / "hwmon", allow=("ondemand",))
    allowed.start(10.0)
    allowed.stop()
    assert "invalid_reasons" not in allowed.extra_summary()


def test_probe_options_are_parsed_and_checked():
    probe = telemetry.make_probe("cpufreq:allow=ondemand+schedutil")
    assert probe.allow == ("ondemand", "schedutil")
    with pytest.raises(UsageError, match="expected allow="):
        telemetry.make_probe("cpufreq:bogus")
    with pytest.raises(UsageError, match="takes no option"):
        telemetry.make_probe("hwmon:x")
    with pytest.raises(UnknownIdError):
        telemetry.make_probe("ina999")
