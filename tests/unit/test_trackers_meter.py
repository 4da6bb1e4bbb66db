"""The external power meter probe (harness/trackers/meter.py) through a fake meter command on PATH.

The outputs are transcribed from the meters' documentation (tests/fixtures/telemetry/README.md): rdserialtool's UM25C
readout and a SCPI power analyser's NR3 reply to MEAS:POW?. A constant known power must give exactly the expected
energy per inference, through the same TelemetryWindow path as hwmon; bad outputs make the probe unavailable.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from harness.errors import UnavailableError
from harness.trackers import meter, telemetry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telemetry"


@pytest.fixture
def fake_meter(tmp_path, monkeypatch):
    """fake_meter(stdout, exit_code=0, unit=None): a command `labmeter` on PATH (only it) printing `stdout`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))

    def make(stdout: str, exit_code: int = 0, unit: str | None = None) -> None:
        (tmp_path / "out.txt").write_text(stdout, encoding="utf-8")
        script = bin_dir / "labmeter"
        # a shell script (a process spawn costs a few ms, so the window gets readings in all its blocks)
        script.write_text(f"#!/bin/sh\n/bin/cat '{tmp_path / 'out.txt'}'\nexit {exit_code}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv(meter.CMD_ENV, "labmeter --serial-device=/dev/rfcomm0 um25c")
        if unit is None:
            monkeypatch.delenv(meter.UNIT_ENV, raising=False)
        else:
            monkeypatch.setenv(meter.UNIT_ENV, unit)
    return make


def test_parse_documented_formats():
    um25c = (FIXTURES / "meter_rdserialtool_um25c.txt").read_text(encoding="utf-8")
    assert meter.parse_reading(um25c, None) == pytest.approx(580.0)
    assert meter.parse_reading((FIXTURES / "meter_scpi_meas_pow.txt").read_text(), "W") == pytest.approx(2500.0)
    assert meter.parse_reading("1234.5\n", "mW") == pytest.approx(1234.5)
    assert meter.parse_reading("0.580W", None) == pytest.approx(580.0)
    assert meter.parse_reading("  580 mW \n", "W") == pytest.approx(580.0)  # a unit printed wins


@pytest.mark.parametrize("text, unit, why", [
    ("", "W", "unparseable output: '(no output)'"),
    ("1.2\n3.4\n", "W", "unparseable output: '3.4'"),
    ("Error: device not found\n", "W", "unparseable output: 'Error: device not found'"),
    ("5.062 V\n", "W", "unparseable output: '5.062 V'"),
    ("nan\n", "W", "unparseable output: 'nan'"),
    ("-0.5\n", "W", "not a power reading: '-0.5'"),
    ((FIXTURES / "meter_scpi_overrange.txt").read_text(), "W", "not a power reading: '+9.90000000E+37'"),
    ("+9.91E+37\n", "W", "not a power reading"),
    ("1.234\n", None, "has no unit and BENCH_METER_UNIT is not W or mW"),
    ("USB: 5.062V, 0.1146A,  0.580W,   44.1Ω\nUSB: 5.0V, 0.1A,  0.5W,   50.0Ω\n", None, "unparseable output: 'USB: 5.0V"),
])
def test_bad_outputs_are_refused_naming_the_meter(text, unit, why):
    with pytest.raises(UnavailableError, match="^meter \\(labmeter\\): ") as err:
        meter.parse_reading(text, unit, tool="meter (labmeter)")
    assert why in err.value.message
    assert "\n" not in err.value.message


def test_constant_power_gives_the_expected_energy_and_interval(fake_meter):
    fake_meter((FIXTURES / "meter_scpi_meas_pow.txt").read_text(), unit="W")
    with telemetry.TelemetryWindow(["psutil", "meter"], interval_s=0.01, idle_s=0.05) as tw:
        time.sleep(0.6)
    n = 120
    assert tw.energy_mj_per_inference(n) == pytest.approx(2500.0 * tw.window_s / n, rel=1e-12)  # mW x s / n = mJ
    rep = tw.to_dict()["meter"]
    assert rep["available"] and rep["reason"] is None
    assert rep["info"]["command"] == "labmeter" and rep["info"]["unit"] == "W"
    power = rep["summary"]["power"]
    assert power["mean_mw"] == pytest.approx(2500.0)
    assert power["idle_mw"] == pytest.approx(2500.0) and power["idle_readings"] >= 1
    assert power["ci_mw"] == pytest.approx([2500.0, 2500.0]), power.get("interval_reason")


def test_um25c_readout_through_the_window(fake_meter):
    fake_meter((FIXTURES / "meter_rdserialtool_um25c.txt").read_text(encoding="utf-8"))
    with telemetry.TelemetryWindow(["meter"], interval_s=0.02) as tw:
        time.sleep(0.1)
    assert tw.to_dict()["meter"]["summary"]["fields"]["meter_power_mw"]["mean"] == pytest.approx(580.0)
    assert tw.energy_mj_per_inference(10) == pytest.approx(580.0 * tw.window_s / 10, rel=1e-12)


@pytest.mark.parametrize("stdout, code, unit, reason", [
    ("+9.90000000E+37\n", 0, "W", "meter (labmeter): not a power reading: '+9.90000000E+37'"),
    ("garbage\n", 0, "W", "meter (labmeter): unparseable output: 'garbage'"),
    ("2.5\n", 0, "kW", "BENCH_METER_UNIT must be W or mW, got 'kW'"),
    ("E-310 no reply\n", 3, "W", "exited with code 3: E-310 no reply"),
])
def test_bad_meter_makes_the_probe_unavailable_not_a_value(fake_meter, stdout, code, unit, reason):
    fake_meter(stdout, exit_code=code, unit=unit)
    with telemetry.TelemetryWindow(["meter"], interval_s=0.01) as tw:
        time.sleep(0.03)
    rep = tw.to_dict()["meter"]
    assert rep["available"] is False and reason in rep["reason"]
    assert rep["summary"]["samples"] == 0
    assert tw.energy_mj_per_inference(10) is None


def test_unconfigured_meter_says_so(monkeypatch):
    monkeypatch.delenv(meter.CMD_ENV, raising=False)
    with telemetry.TelemetryWindow(["meter"], interval_s=0.01) as tw:
        pass
    assert tw.to_dict()["meter"]["reason"] == "BENCH_METER_CMD is not set: no meter configured on this machine"
