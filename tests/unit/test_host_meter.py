"""The host-side meter for a remote board (harness/launchers/host_meter.py, clock.py) on recorded numbers: the
NTP-style clock offset, the readings that fall inside the board's windows once mapped, the null energies with their
reasons, the probe order that picks the energy, and the inventory keys. tests/remote/test_host_meter.py runs it
end to end on the loopback board."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time

from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_helpers import job_folder  # noqa: E402

from harness.errors import InputError  # noqa: E402
from harness.launchers import clock, host_meter  # noqa: E402
from harness.launchers.clock import Offset  # noqa: E402

EPOCH = 1_764_000_000.0  # a board's time.time() in 2025


def test_offset_is_the_midpoint_of_the_smallest_round_trip():
    # (host send, board time, host receive): recorded with the board 1764000000 - 100 s ahead of perf_counter
    pings = [(100.000, EPOCH + 0.0110, 100.020),   # 20 ms round trip
             (100.100, EPOCH + 0.1021, 100.104),   # 4 ms: kept
             (100.200, EPOCH + 0.2150, 100.230)]   # 30 ms
    o = clock.best(pings)
    assert o.round_trip_s == pytest.approx(0.004)
    assert o.uncertainty_s == pytest.approx(0.002)
    assert o.offset_s == pytest.approx(EPOCH + 0.1021 - 100.102)
    assert o.to_host(EPOCH + 0.1021) == pytest.approx(100.102)
    with pytest.raises(ValueError, match="came back before it was sent"):
        clock.best([(1.0, EPOCH, 0.9)])


def test_drift_between_before_and_after_widens_the_uncertainty():
    before = [(10.0, EPOCH + 0.003, 10.006)]                 # offset EPOCH - 10.0, +- 3 ms
    after = [(70.0, EPOCH + 60.0045, 70.001)]                # offset EPOCH - 10.0 + 0.004, +- 0.5 ms: kept
    o = clock.combine(before, after)
    assert o.offset_s == pytest.approx(EPOCH + 60.0045 - 70.0005)
    assert o.drift_s == pytest.approx(0.004, abs=1e-6)  # epoch seconds in a double: ~0.2 us steps
    assert o.uncertainty_s == pytest.approx(0.0005 + 0.004, abs=1e-6)
    assert clock.combine(before, []) == clock.best(before)


def _readings(t0: float, t1: float, step: float, mw) -> np.ndarray:
    t = np.arange(t0, t1 + 1e-9, step)
    return np.column_stack([t, np.broadcast_to(mw, t.shape) if np.isscalar(mw) else mw(t)])


# host perf_counter = board time - OFFSET; the board's idle window [EPOCH+2, EPOCH+4], timed [EPOCH+5, EPOCH+9]
OFFSET = Offset(offset_s=EPOCH - 50.0, uncertainty_s=0.001, round_trip_s=0.002)
WINDOWS = {"clock": "time.time", "timed": [EPOCH + 5.0, EPOCH + 9.0], "idle": [EPOCH + 2.0, EPOCH + 4.0]}


def test_readings_inside_the_mapped_windows_give_power_energy_and_idle():
    # host readings every 0.25 s from 50 to 61: 1000 mW up to 54.5 (idle, then soak), 2500 mW from there on
    readings = _readings(50.0, 61.0, 0.25, lambda t: np.where(t < 54.5, 1000.0, 2500.0))
    power, inside, energy = host_meter.summarise(readings, WINDOWS, OFFSET, inferences=800)
    assert inside[:, 0].min() == 0.0 and inside[:, 0].max() == 4.0 and len(inside) == 17  # 55.00 .. 59.00
    assert power["readings"] == 17 and power["mean_mw"] == 2500.0 and power["ci_mw"] == [2500.0, 2500.0]
    assert energy == pytest.approx(2500.0 * 4.0 / 800)  # mW x s / n = mJ per inference
    assert power["idle_mw"] == 1000.0 and power["idle_readings"] == 9  # 52.00 .. 54.00
    assert "energy_reason" not in power and "idle_reason" not in power


@pytest.mark.parametrize("kw, fragment", [
    ({"windows": None}, "the worker reported no window times"),
    ({"offset": None, "clock_error": "the board answered 'x', not a time"},
     "could not be mapped to the host's: the board answered 'x', not a time"),
    ({"offset": Offset(offset_s=EPOCH - 50.0, uncertainty_s=0.25, round_trip_s=0.5)},
     "clock uncertainty 0.2500 s is more than 5% of the 4.000 s window"),
    ({"readings": _readings(50.0, 61.0, 5.0, 2500.0)}, "1 meter reading(s) inside the 4.000 s window (needs 2)"),
    ({"failed_at": 57.0, "failure": "meter (labmeter): unparseable output: 'ERR'"},
     "the meter stopped before the window ended: meter (labmeter): unparseable output: 'ERR'"),
], ids=["no-windows", "no-clock", "uncertain", "sparse", "failed"])
def test_energy_is_null_with_its_reason(kw, fragment):
    args = {"readings": _readings(50.0, 61.0, 0.25, 2500.0), "windows": WINDOWS, "offset": OFFSET, **kw}
    power, _, energy = host_meter.summarise(args.pop("readings"), args.pop("windows"), args.pop("offset"), 800,
                                            **args)
    assert energy is None and fragment in power["energy_reason"]


def test_idle_power_is_null_with_its_reason_when_too_few_readings_fall_in_the_idle_window():
    readings = _readings(50.0, 61.0, 0.25, 2500.0)
    windows = dict(WINDOWS, idle=[EPOCH + 4.8, EPOCH + 4.95])  # 0.15 s: no reading on the 0.25 s grid
    power, _, energy = host_meter.summarise(readings, windows, OFFSET, 800)
    assert energy == pytest.approx(12.5)
    assert power["idle_mw"] is None and power["idle_readings"] == 0
    assert power["idle_reason"] == "0 meter reading(s) inside the 0.150 s idle window (needs 2)"


def _probe(power: bool) -> dict:
    return {"available": True, "reason": None, "info": {},
            "summary": {"samples": 3, "fields": {}, **({"power": {"mean_mw": 900.0}} if power else {})}}


def test_energy_comes_from_the_first_probe_with_power_in_profile_order():
    meter = _probe(True)
    board = {"psutil": _probe(False), "hwmon": _probe(True)}
    # the profile does not name meter: the host meter comes last, the board's hwmon energy stays
    tele, energy = host_meter.merge(board, 1.5, host_meter.place_in(["psutil", "hwmon"]), meter, 2.5)
    assert list(tele) == ["psutil", "hwmon", "meter"] and energy == 1.5
    # named before hwmon: the host meter's energy, even a null one
    tele, energy = host_meter.merge(board, 1.5, ["psutil", "meter", "hwmon"], meter, None)
    assert list(tele) == ["psutil", "meter", "hwmon"] and energy is None
    # a meter without readings has no power block: the next probe's energy
    tele, energy = host_meter.merge(board, 1.5, ["meter", "psutil", "hwmon"], _probe(False), None)
    assert energy == 1.5 and tele["meter"]["summary"] == {"samples": 3, "fields": {}}


def test_the_board_job_leaves_meter_out(tmp_path):
    import dataclasses

    job, _ = job_folder(tmp_path / "in")
    job = dataclasses.replace(job, telemetry=("psutil", "meter", "hwmon"))
    assert host_meter.HostMeter.board_job(job).telemetry == ("psutil", "hwmon")


# -- inventory -------------------------------------------------------------------------------------------------
def _inventory(tmp_path, text: str):
    from harness.launchers.remote import load_inventory

    path = tmp_path / "boards.toml"
    path.write_text(text)
    return path, load_inventory(path)


def test_an_inventory_meter_reaches_the_board_without_its_arguments(tmp_path):
    from harness.launchers.remote import board_for_device

    path, inv = _inventory(tmp_path, '[defaults]\nmeter_interval_s = 0.25\n[boards.pi5-a]\naddress = "pi@10.0.0.5"\n'
                                     'meter = "/opt/lab/rdserialtool --serial-device=/dev/rfcomm0 --token=s3cret um25c"\n'
                                     'meter_unit = "W"\n[boards.pi5-b]\naddress = "pi@10.0.0.6"\n')
    board = board_for_device("pi5-a", inv, path)
    assert board.meter.argv[0] == "/opt/lab/rdserialtool" and board.meter.unit == "W"
    assert board.meter.interval_s == 0.25 and board.meter.name == "rdserialtool"
    assert board.describe()["meter"] == {"runs_on": "host", "command": "rdserialtool", "interval_s": 0.25}
    assert "s3cret" not in json.dumps(board.describe())
    assert board_for_device("pi5-b", inv, path).meter is None  # [defaults] holds no meter


@pytest.mark.parametrize("text, fragment", [
    ('[defaults]\nmeter = "labmeter"\n', "[defaults]: meter belongs to one board"),
    ('[boards.a]\naddress = "h"\nmeter = 3\n', "[a]: meter must be a string"),
    ('[boards.a]\naddress = "h"\nmeter = "labmeter \'unclosed"\n', "[a]: meter: cannot split the command line"),
    ('[boards.a]\naddress = "h"\nmeter = "  "\n', "[a]: meter is empty"),
    ('[boards.a]\naddress = "h"\nmeter = "m"\nmeter_unit = "kW"\n', "[a]: meter_unit must be \"W\" or \"mW\""),
    ('[boards.a]\naddress = "h"\nmeter = "m"\nmeter_interval_s = 0\n', "[a]: meter_interval_s must be a number"),
    ('[defaults]\nmeter_interval_s = "fast"\n', "[defaults]: meter_interval_s must be a number"),
    ('[boards.a]\naddress = "h"\nmeter_unit = "W"\n', "[a]: meter_unit without meter"),
], ids=["defaults", "not-string", "unsplittable", "empty", "unit", "interval", "interval-type", "orphan-unit"])
def test_bad_meter_settings_are_one_line_naming_the_file(tmp_path, text, fragment):
    with pytest.raises(InputError) as exc:
        _inventory(tmp_path, text)
    assert exc.value.message.startswith(str(tmp_path / "boards.toml")) and fragment in exc.value.message
    assert "\n" not in exc.value.message


# -- the clock through a real command relay, and the sampler ----------------------------------------------------
class _LocalSSH:
    """An SSH stand-in that runs the remote command here (sh -c): the board's clock is this machine's time.time()."""

    def argv(self, remote_command: str) -> list[str]:
        return ["/bin/sh", "-c", remote_command]


@pytest.fixture
def relay():
    from harness.launchers.relay import Relay

    r = Relay(_LocalSSH(), lambda: sys.executable, "board t")
    yield r
    r.close()


def test_the_board_clock_offset_brackets_this_machines_own(relay):
    """Host and 'board' are one machine here, so the true offset is time.time() - perf_counter(): it must lie within
    the measured uncertainty (plus the few microseconds between reading the two clocks below). The relay answers
    the pings itself: no command runs for them."""
    c = clock.BoardClock(relay)
    c.open()
    try:
        pings = c.ping()
    finally:
        c.close()
    assert len(pings) == clock.PINGS and relay.starts == 1 and relay.running  # close() leaves the relay be
    o = clock.best(pings)
    true = time.time() - time.perf_counter()
    assert abs(o.offset_s - true) <= o.uncertainty_s + 1e-3


class _Liar:
    """A relay whose board answers `said` to every ping."""

    def __init__(self, said) -> None:
        self.said = said

    def open(self) -> None:
        pass

    def clock(self, n: int, timeout: float):
        return [(1.0, self.said, 1.001)] * n


@pytest.mark.parametrize("said, shown", [("soon", "'soon'"), (True, "True"), (float("nan"), "nan"),
                                         (-5.0, "-5.0"), (None, "None"), ("\x1b[2J1e9", "'\\x1b[2J1e9'")],
                         ids=["text", "json-true", "nan", "negative", "null", "escape"])
def test_a_board_that_answers_something_else_is_a_clock_error(said, shown):
    c = clock.BoardClock(_Liar(said))
    c.open()
    with pytest.raises(clock.ClockError) as exc:
        c.ping()
    assert str(exc.value) == f"the board answered {shown}, not a time"


class _Unreachable:
    def argv(self, remote_command: str) -> list[str]:
        return ["/bin/sh", "-c", "echo 'ssh: connect to host 10.0.0.7 port 22: No route to host' >&2; exit 255"]


def test_a_relay_that_cannot_start_is_a_clock_error():
    from harness.launchers.relay import Relay

    c = clock.BoardClock(Relay(_Unreachable(), lambda: "python3", "board t"))
    with pytest.raises(clock.ClockError) as exc:
        c.open()
    assert str(exc.value) == ("board t: the command relay's connection closed: ssh: connect to host 10.0.0.7 port 22: "
                              "No route to host")


def test_the_host_meter_names_its_command_without_arguments(tmp_path, monkeypatch, relay):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "labmeter").write_text("#!/bin/sh\necho 'Error: device not found'\n")
    (bin_dir / "labmeter").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    spec = host_meter.HostMeterSpec(argv=("labmeter", "--token=s3cret"), unit="W")
    meter = host_meter.HostMeter(spec)
    meter.start(relay)
    meter.stop()
    entry, energy = meter.entry(WINDOWS, 10)
    assert energy is None and entry["available"] is False
    assert entry["reason"] == "meter (labmeter): unparseable output: 'Error: device not found'"
    assert entry["info"]["command"] == "labmeter" and entry["info"]["runs_on"] == "host"
    assert "s3cret" not in json.dumps(entry) and entry["info"]["clock"]["uncertainty_s"] >= 0
    assert shlex.join(spec.argv) == "labmeter --token=s3cret"


def test_the_worker_reports_its_windows_on_its_wall_clock_and_the_host_accepts_them(tmp_path):
    """What the host meter places its readings on: JobResult `windows`, the idle window before the timed one."""
    import dataclasses

    from harness.device.worker import run_job
    from harness.jobs import SteadyState
    from harness.launchers import trust

    job, _ = job_folder(tmp_path / "in")
    job = dataclasses.replace(job, steady_state=SteadyState(idle_s=0.05))
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    w = res.windows
    assert w["clock"] == "time.time" and w["idle"][0] <= w["idle"][1] <= w["timed"][0] <= w["timed"][1]
    assert trust.read_result(tmp_path / "out", job, where="board x").windows == w


# -- a failed job keeps its meter block -------------------------------------------------------------------------
def _recorded(readings: np.ndarray, t0: float = 50.0) -> host_meter.HostMeter:
    """A HostMeter that has read `readings` ([host perf_counter, mW]) around a job, its clock measured as OFFSET."""
    meter = host_meter.HostMeter(host_meter.HostMeterSpec(argv=("labmeter", "--token=s3cret"), unit="W"))
    meter.sampler.samples = [(float(t), {"meter_power_mw": float(v)}) for t, v in readings]
    meter._t0 = t0
    board_t = OFFSET.offset_s + 50.0  # the board's time when the host's perf_counter read 50.0
    meter._before = [(50.0 - 0.001, board_t, 50.0 + 0.001)]
    return meter


def test_a_failed_job_keeps_what_the_meter_saw_with_energy_null_and_the_reason():
    from harness.jobs import JobResult

    readings = _readings(50.0, 61.0, 0.25, lambda t: np.where(t < 54.5, 1000.0, 2500.0))
    meter = _recorded(readings)
    failed = JobResult(entry="gender-dlib--onnx-fp32", status="test-error", reason="worker: onnxruntime raised Fail",
                       windows=WINDOWS)
    out = meter.apply_failed(failed)
    assert out.status == "test-error" and out.reason == failed.reason and out.energy_mj_per_inference is None
    block = out.telemetry["meter"]
    power = block["summary"]["power"]
    assert block["energy_mj_per_inference"] is None
    assert power["energy_reason"] == "job failed: worker: onnxruntime raised Fail"
    # the windows the board sent are summarised as for a finished job: the timed window's mean, the idle power
    assert power["mean_mw"] == 2500.0 and power["readings"] == 17 and power["idle_mw"] == 1000.0
    # every reading of the job, from when sampling started (host clock), and the count
    assert block["info"]["readings"] == len(readings) == len(block["readings_mw"]) == block["summary"]["samples"]
    assert block["readings_mw"][0] == [0.0, 1000.0] and block["readings_mw"][-1] == [11.0, 2500.0]
    assert block["summary"]["fields"]["meter_power_mw"]["min"] == 1000.0
    assert block["info"]["job"] == "failed: worker: onnxruntime raised Fail" and block["available"] is True
    assert "s3cret" not in json.dumps(block)


def test_a_job_lost_before_its_windows_keeps_the_readings_without_power_figures():
    from harness.launchers.trust import infrastructure_result

    meter = _recorded(_readings(50.0, 52.0, 0.5, 1800.0))
    job, _ = job_folder(Path(tempfile.mkdtemp()) / "in")
    lost = infrastructure_result(job, Path(tempfile.mkdtemp()), "board b: connection lost while the worker ran",
                                 255, 3.0)
    block = meter.apply_failed(lost).telemetry["meter"]
    assert block["summary"]["power"] == {"readings": 0, "mean_mw": None, "ci_mw": None, "idle_mw": None,
                                         "idle_readings": 0,
                                         "energy_reason": "job failed: board b: connection lost while the worker ran"}
    assert [v for _, v in block["readings_mw"]] == [1800.0] * 5 and block["info"]["board_windows"] is None


def test_a_meter_that_read_nothing_says_so_in_the_failed_block():
    from harness.jobs import JobResult

    meter = _recorded(np.zeros((0, 2)))
    block = meter.failed_entry(None, "worker killed on the board by SIGKILL")
    assert block["available"] is False and block["reason"] == "no reading" and block["readings_mw"] == []
    assert block["summary"]["power"]["energy_reason"] == "job failed: worker killed on the board by SIGKILL"
    result = JobResult(entry="e", status="test-error", reason="r").replace(telemetry={"meter": block})
    assert result.telemetry["meter"] is block


def test_only_a_host_meter_block_is_kept_on_a_failed_entry_and_an_ok_block_turns_null():
    from types import SimpleNamespace

    from harness.jobs import JobResult
    from harness.scenarios.orchestrate import keep_meter

    ok_block = {"available": True, "reason": None, "info": {"runs_on": "host"},
                "summary": {"samples": 3, "fields": {}, "power": {"mean_mw": 900.0, "readings": 3}}}
    block = host_meter.failed_block(ok_block, "board b: timings.npy: 12 timings, result says 10")
    assert block["energy_mj_per_inference"] is None and block["summary"]["power"]["mean_mw"] == 900.0
    assert block["summary"]["power"]["energy_reason"] == "job failed: board b: timings.npy: 12 timings, result says 10"
    assert "energy_reason" not in ok_block["summary"]["power"]  # the ok block itself is left as it was
    result = JobResult(entry="e", status="test-error", reason="x", telemetry={"meter": block})
    metered = SimpleNamespace(board=SimpleNamespace(meter=host_meter.HostMeterSpec(argv=("labmeter",))))
    entry: dict = {}
    keep_meter(entry, result, metered)
    assert entry["meter"] is block
    entry = {}
    keep_meter(entry, result, SimpleNamespace(board=SimpleNamespace(meter=None)))  # a board's own: not recorded
    assert "meter" not in entry
