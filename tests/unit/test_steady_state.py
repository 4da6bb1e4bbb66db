"""Steady state on a board (issue 21): the job's SteadyState is bounded and numeric, the worker cools down, reads
the idle board and soaks the model before the timed window, and the host keeps only a well-formed record.

Temperatures come from a fake thermal tree laid out as Linux's thermal sysfs ABI
(Documentation/driver-api/thermal/sysfs-api.rst: thermal_zone<N>/type, thermal_zone<N>/temp in millidegrees C; a
Raspberry Pi's zone is "cpu-thermal"), power from an INA226 hwmon tree (test_trackers_power.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from device_helpers import job_folder
from harness.device import steady
from harness.device.worker import run_job
from harness.errors import InfrastructureError, InputError
from harness.jobs import MAX_WAIT_S, Job, JobResult, SteadyState
from harness.launchers import trust
from harness.trackers import hwmon, psutil_probe, telemetry, validity
from test_trackers_power import ina226_tree


def thermal_tree(root: Path, millic: dict[str, int]) -> Path:
    for i, (kind, value) in enumerate(millic.items()):
        zone = root / f"thermal_zone{i}"
        zone.mkdir(parents=True, exist_ok=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{value}\n")
    return root


def set_temp(root: Path, millic: int, zone: int = 0) -> None:
    (root / f"thermal_zone{zone}" / "temp").write_text(f"{millic}\n")


# --- the job spec: what the board is asked to do is bounded and numeric ---

@pytest.mark.parametrize("field, value, fragment", [
    ("idle_s", -1, "steady_state.idle_s must be a number of seconds"),
    ("soak_s", MAX_WAIT_S + 1, "steady_state.soak_s must be a number of seconds"),
    ("cooldown_s", "60", "steady_state.cooldown_s must be a number of seconds"),
    ("idle_s", True, "steady_state.idle_s must be a number of seconds"),
    ("cooldown_within_c", 0, "steady_state.cooldown_within_c must be in (0, 50]"),
    ("cooldown_within_c", 51, "steady_state.cooldown_within_c must be in (0, 50]"),
    ("idle_temp_c", 1e9, "steady_state.idle_temp_c must be a temperature"),
    ("surprise", 1, "unexpected keyword argument 'surprise'"),
])
def test_a_job_with_bad_steady_state_is_refused_in_one_line(tmp_path, field, value, fragment):
    job, _ = job_folder(tmp_path)
    d = json.loads(job.to_json())
    d["steady_state"][field] = value
    with pytest.raises(InputError) as exc:
        Job.from_json(json.dumps(d), str(tmp_path / "job.json"))
    msg = exc.value.message
    assert msg.startswith(f"{tmp_path / 'job.json'}: not a valid job: ") and fragment in msg and "\n" not in msg


def test_non_finite_seconds_are_refused_and_json_cannot_even_carry_them(tmp_path):
    with pytest.raises(ValueError, match="idle_s"):
        SteadyState(idle_s=math.nan)
    with pytest.raises(ValueError, match="soak_s"):
        SteadyState(soak_s=math.inf)
    job, _ = job_folder(tmp_path)
    text = job.to_json().replace('"idle_s": 0.0', '"idle_s": NaN')
    with pytest.raises(InputError, match="steady_state.idle_s"):
        Job.from_json(text)


def test_steady_state_round_trips_and_an_older_job_without_it_reads_as_off(tmp_path):
    job, _ = job_folder(tmp_path)
    st = SteadyState(idle_s=5, soak_s=60, cooldown_s=300, cooldown_within_c=3, idle_temp_c=41.5)
    j2 = Job.from_json(Job(**{**job.__dict__, "steady_state": st}).to_json())
    assert j2.steady_state == st
    d = json.loads(job.to_json())
    del d["steady_state"]
    assert Job.from_json(json.dumps(d)).steady_state == SteadyState()


# --- the SoC temperature the thermal probe reads ---

def test_soc_temperature_is_the_hottest_zone_of_the_tree(tmp_path, monkeypatch):
    root = thermal_tree(tmp_path, {"cpu-thermal": 48_250, "rp1_adc": 39_000})
    monkeypatch.setenv(psutil_probe.THERMAL_ROOT_ENV, str(root))
    assert psutil_probe.soc_temp_c() == (48.25, "cpu_thermal_temp_c")
    assert psutil_probe.PsutilProbe().read()["cpu_thermal_temp_c"] == 48.25  # the probe reads the same tree
    monkeypatch.setenv(psutil_probe.THERMAL_ROOT_ENV, str(tmp_path / "none"))
    assert psutil_probe.soc_temp_c() == (None, None)


# --- cool-down and soak, on a fake clock and sensor ---

class FakeBoard:
    """A clock, a sleep and a sensor that cools by `rate` C per second slept."""

    def __init__(self, temp: float | None, rate: float = 1.0):
        self.now, self.temp_c, self.rate = 0.0, temp, rate

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
        if self.temp_c is not None:
            self.temp_c -= self.rate * s

    def temp(self):
        return self.temp_c, None if self.temp_c is None else "cpu_thermal_temp_c"


def cool(settings: SteadyState, board: FakeBoard) -> dict:
    return steady.cool_down(settings, temp=board.temp, sleep=board.sleep, clock=board.clock)


def test_fixed_cool_down_waits_its_seconds():
    rec = cool(SteadyState(cooldown_s=30), FakeBoard(60.0))
    assert rec["done"] and rec["mode"] == "fixed" and rec["waited_s"] == 30
    assert (rec["temp_before_c"], rec["temp_after_c"]) == (60.0, 30.0)


def test_cool_down_to_idle_stops_once_within_the_band():
    rec = cool(SteadyState(cooldown_s=300, cooldown_within_c=3, idle_temp_c=40.0), FakeBoard(60.0, rate=0.5))
    assert rec["done"] and rec["reached"] and rec["mode"] == "to_idle"
    assert rec["waited_s"] == 34.0 and rec["temp_after_c"] == 43.0  # 60 -> 43 C at 0.5 C/s, polled every second
    assert "reason" not in rec


def test_cool_down_to_idle_is_bounded_by_the_longest_wait():
    rec = cool(SteadyState(cooldown_s=10, cooldown_within_c=3, idle_temp_c=40.0), FakeBoard(80.0, rate=0.1))
    assert rec["done"] and rec["reached"] is False and rec["waited_s"] == 10
    assert rec["reason"] == "still above 43 C after 10 s"


def test_cool_down_without_a_sensor_or_idle_temperature_waits_the_longest_and_says_why():
    rec = cool(SteadyState(cooldown_s=20, cooldown_within_c=3, idle_temp_c=40.0), FakeBoard(None))
    assert rec["waited_s"] == 20 and rec["reached"] is False and "no temperature sensor" in rec["reason"]
    rec = cool(SteadyState(cooldown_s=20, cooldown_within_c=3), FakeBoard(50.0))
    assert rec["waited_s"] == 20 and "no idle temperature" in rec["reason"]


def test_no_cool_down_asked_for_reads_the_temperature_only():
    rec = cool(SteadyState(), FakeBoard(45.0))
    assert rec == {"done": False, "mode": "fixed", "max_s": 0.0, "waited_s": 0.0, "temp_before_c": 45.0,
                   "sensor": "cpu_thermal_temp_c", "reason": "no cool-down asked for"}


def test_soak_runs_the_model_untimed_for_its_seconds():
    board, calls = FakeBoard(40.0, rate=-2.0), []  # heats 2 C per second of work

    def infer():
        calls.append(1)
        board.sleep(0.25)

    rec = steady.soak(infer, 3.0, temp=board.temp, clock=board.clock)
    assert rec["done"] and rec["inferences"] == len(calls) == 12 and rec["s"] == 3.0
    assert (rec["temp_before_c"], rec["temp_after_c"]) == (40.0, 46.0)


# --- the telemetry window: idle and soak readings kept apart from the timed window ---

def test_idle_and_soak_readings_stay_out_of_the_window(tmp_path, monkeypatch):
    """The soak heats the fake SoC to 90 C (above validity's 80 C limit) and it is back at 50 C when the window
    opens: the window's summary shows 50 C only, so the soak cannot make the timing INVALID; idle and soak power
    are the INA226's constant 3 W."""
    root = thermal_tree(tmp_path / "thermal", {"cpu-thermal": 50_000})
    monkeypatch.setenv(psutil_probe.THERMAL_ROOT_ENV, str(root))
    monkeypatch.setenv(hwmon.ROOT_ENV, str(ina226_tree(tmp_path / "hwmon", uw=3_000_000)))
    monkeypatch.setenv(hwmon.RAILS_ENV, "")

    def hot_soak():
        set_temp(root, 90_000)
        rec = steady.soak(lambda: __import__("time").sleep(0.01), 0.2)
        set_temp(root, 50_000)
        return rec

    with telemetry.TelemetryWindow(["psutil", "hwmon"], interval_s=0.02, idle_s=0.1, before_window=hot_soak) as tw:
        __import__("time").sleep(0.2)
    t = tw.to_dict()
    assert t["psutil"]["summary"]["fields"]["cpu_thermal_temp_c"]["max"] == 50.0
    assert tw.before["soak"]["done"] and tw.before["soak"]["temp_after_c"] == 90.0
    assert tw.before["idle_s"] >= 0.1
    power = t["hwmon"]["summary"]["power"]
    assert power["idle_mw"] == pytest.approx(3000.0) and power["soak_mw"] == pytest.approx(3000.0)
    assert power["idle_readings"] >= 2 and power["mean_mw"] == pytest.approx(3000.0)
    assert not [r for r in validity._telemetry_reasons("psutil", t["psutil"]["summary"], 1.5, 80.0)]
    # what the host needs for the energy above idle (harness/metrics/energy.py): the idle readings' spread and the
    # window's length; the constant 3 W idle and active leaves nothing above idle
    from harness.metrics.energy import above_idle

    assert power["idle_sd_mw"] == pytest.approx(0.0, abs=1e-6) and power["window_s"] == pytest.approx(tw.window_s)
    net = above_idle(t, tw.energy_mj_per_inference(10), 10)
    assert net["probe"] == "hwmon" and net["net_mw"] == pytest.approx(0.0, abs=1e-6)
    assert net["energy_mj_per_inference"] == pytest.approx(0.0, abs=1e-6)


# --- the worker path, end to end on the local board with fake trees ---

def test_worker_cools_down_reads_idle_power_and_soaks_before_the_timed_window(tmp_path, monkeypatch):
    root = thermal_tree(tmp_path / "thermal", {"cpu-thermal": 47_500})
    monkeypatch.setenv(psutil_probe.THERMAL_ROOT_ENV, str(root))
    monkeypatch.setenv(hwmon.ROOT_ENV, str(ina226_tree(tmp_path / "hwmon", uw=3_000_000)))
    monkeypatch.setenv(hwmon.RAILS_ENV, "")
    job, _ = job_folder(tmp_path / "in", n=4)
    st = SteadyState(idle_s=0.3, soak_s=0.3, cooldown_s=5, cooldown_within_c=2, idle_temp_c=46.0)
    job = Job(**{**job.__dict__, "steady_state": st, "telemetry": ("psutil", "hwmon")})
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    s = res.steady_state
    assert s["settings"]["soak_s"] == 0.3
    assert s["cooldown"]["reached"] and s["cooldown"]["waited_s"] < 5  # 47.5 C is within 2 C of 46 C at once
    assert s["cooldown"]["temp_before_c"] == 47.5 and s["cooldown"]["sensor"] == "cpu_thermal_temp_c"
    assert s["idle"]["done"] and s["idle"]["s"] >= 0.3 and s["idle"]["temp_c"] == 47.5
    assert s["idle"]["power_mw"]["hwmon"] == pytest.approx(3000.0)
    assert s["soak"]["done"] and s["soak"]["s"] >= 0.3 and s["soak"]["inferences"] > 0
    power = res.telemetry["hwmon"]["summary"]["power"]
    assert power["idle_mw"] == pytest.approx(3000.0) and power["idle_readings"] >= 1
    assert power["soak_mw"] == pytest.approx(3000.0)
    assert res.energy_mj_per_inference > 0  # the constant 3 W over the (short) window
    # what went to disk is what the host reads, through the trust checks
    assert trust.read_result(tmp_path / "out", job, where="local worker").steady_state == s


def test_worker_without_steady_settings_does_nothing_before_the_window(tmp_path, monkeypatch):
    monkeypatch.setenv(psutil_probe.THERMAL_ROOT_ENV, str(thermal_tree(tmp_path / "t", {"cpu-thermal": 40_000})))
    job, _ = job_folder(tmp_path / "in", n=3)
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    assert set(res.steady_state) == {"settings", "cooldown", "fan"} and res.steady_state["cooldown"]["done"] is False
    assert res.steady_state["cooldown"]["temp_before_c"] == 40.0  # the first entry's gives the run's idle temperature


# --- the host keeps only a well-formed record ---

def test_a_hostile_steady_state_record_is_cleaned_field_by_field():
    rec = steady.clean_record({
        "cooldown": {"done": "yes", "waited_s": -3, "temp_before_c": 1e6, "temp_after_c": 45.0, "mode": "<b>x</b>",
                     "sensor": "../../etc/passwd", "reason": "line one\n<script>two</script>" + "x" * 500},
        "idle": {"done": True, "s": math.nan, "temp_c": 44.0, "power_mw": {"hwmon": 3000.0, "<i>": 1, "pmic": "9"}},
        "soak": ["not", "a", "record"], "settings": {"idle_s": 1e9}, "evil": {"x": 1}})
    assert rec["cooldown"]["done"] is None and rec["cooldown"]["waited_s"] is None
    assert rec["cooldown"]["temp_before_c"] is None and rec["cooldown"]["temp_after_c"] == 45.0
    assert rec["cooldown"]["mode"] is None and "sensor" not in rec["cooldown"]
    assert rec["cooldown"]["reason"] == "line one"
    assert rec["idle"] == {"done": True, "s": None, "temp_c": 44.0, "power_mw": {"hwmon": 3000.0, "pmic": None}}
    assert set(rec) == {"cooldown", "idle"}  # nothing else the board sent is kept
    assert steady.clean_record("a string") is None


def test_a_steady_state_that_is_not_an_object_is_an_infrastructure_error(tmp_path):
    job, _ = job_folder(tmp_path / "in")
    res = JobResult(entry=job.entry, status="ok", steady_state=[1, 2], backend={
        "runtime": "onnxruntime", "requested": "CPUExecutionProvider", "active": ["CPUExecutionProvider"], "ok": True})
    with pytest.raises(InfrastructureError, match="field 'steady_state'.*not an object"):
        trust.check_claims(res, job, where="board")


# --- the report shows it where device state is shown ---

def test_report_shows_idle_beside_active_power_cool_down_and_soak(tmp_path):
    import copy

    from harness.report.html import render_html, render_markdown
    from harness.results.store import Run
    from helpers_results import make_run

    run = make_run(tmp_path / "results", target="rpi", energy_mj={"onnx-fp32": 5.0})
    doc = copy.deepcopy(run.doc)
    x = next(e for e in doc["entries"] if e["entry"].endswith("onnx-fp32"))
    x["speed"].setdefault("telemetry", {})["hwmon"] = {"available": True, "reason": None, "info": {}, "summary": {
        "samples": 12, "fields": {}, "power": {"mean_mw": 4210.0, "ci_mw": [4150.0, 4270.0], "idle_mw": 2710.0,
                                              "idle_readings": 10, "soak_mw": 4190.0, "readings": 12}}}
    x["speed"]["device_state"] = steady.clean_record({
        "cooldown": {"done": True, "mode": "to_idle", "waited_s": 84.0, "max_s": 300, "temp_before_c": 61.2,
                     "temp_after_c": 44.9, "idle_temp_c": 42.0, "within_c": 3, "reached": True},
        "idle": {"done": True, "s": 5.0, "temp_c": 44.9, "power_mw": {"hwmon": 2710.0}},
        "soak": {"done": True, "s": 60.0, "inferences": 5210, "temp_before_c": 44.9,
                 "temp_after_c": "<b>58</b>", "sensor": "cpu_thermal_temp_c"}})
    edited = Run(path=run.path, doc=doc)
    page, md = render_html([edited]), render_markdown([edited])
    for text in (page, md):
        assert "Device state" in text and "2710 (10)" in text and "4210 [4150, 4270], hwmon" in text
        assert "84.0 s, 61.2 → 44.9 C (to within 3 C of idle 42.0 C: reached)" in text
        assert "60.0 s, 5210 inferences, 44.9 → - C" in text  # the board's markup was dropped, not shown
        assert "<b>58" not in text


def test_report_says_when_no_temperature_was_read():
    from harness.report import device_state

    assert device_state._soak({"done": True, "s": 5.0, "inferences": 10}) == "5.0 s, 10 inferences, no temperature read"
    assert device_state._cooldown({"done": True, "mode": "fixed", "waited_s": 3.0}) == "3.0 s, no temperature read"
    assert device_state._cooldown({"done": False}) == "none"
