"""A fan-out entry lost with no board left to retry it on (harness/scenarios/fanout.py `_record_failed`) keeps what
the host's meter saw during its last attempt, as a failed job recorded on its board does (orchestrate.keep_meter):
run.json `entries[].meter`, energy null, "job failed: WHY". Driven through the real fan_out queue and infrastructure
handler with one board; the meter block is a real HostMeter's (harness/launchers/host_meter.py failed_entry)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from harness.jobs import STATUS_INFRA_ERROR, JobResult
from harness.launchers import host_meter
from harness.scenarios.fanout import fan_out
from harness.scenarios.orchestrate import BoardLost

WHY = "board pi-a: worker killed on the board by SIGKILL"


def _meter() -> host_meter.HostMeter:
    meter = host_meter.HostMeter(host_meter.HostMeterSpec(argv=("labmeter",), unit="W"))
    meter.sampler.samples = [(50.0 + 0.5 * i, {"meter_power_mw": 1800.0 + 10 * i}) for i in range(6)]
    meter._t0 = 50.0
    return meter


class Session:
    def __init__(self, spec, answering: bool):
        self.board_name = "pi-a"
        self.launcher = SimpleNamespace(board=SimpleNamespace(meter=spec))
        self.power_cycles: list = []
        self.answering = answering
        self.released = False

    def reachable(self) -> bool:
        return self.answering

    def power_cycle(self, reason, entry):
        return None  # no power switch

    def release(self) -> None:
        self.released = True

    def describe(self) -> dict:
        return {"board": {"name": self.board_name}}


class Ctx:
    """What fan_out needs of the orchestrator: its `run` fails the entry for infrastructure reasons, the host meter's
    block in the result as the SSH launcher leaves it (HostMeter.apply_failed)."""

    def __init__(self, meter):
        self.doc: dict = {}
        self.writer = SimpleNamespace(write_run_json=lambda doc: None, run_id="r1")
        self.recorded: list[dict] = []
        self.meter = meter
        self.lock: threading.Lock | None = None

    def log(self, msg: str) -> None:
        pass

    def record(self, entry: dict, session) -> None:
        self.recorded.append(entry)

    def run(self, e, launcher, session, *, first, on_infra, retries):
        result = JobResult(entry=e["entry"], status=STATUS_INFRA_ERROR, reason=WHY)
        if self.meter is not None:
            result = self.meter.apply_failed(result)
        on_infra(result, e)  # raises Requeue: the entry goes back for another board
        return True


def _entry() -> dict:
    return {"entry": "gender-dlib--onnx-fp32", "model": "gender-dlib", "variant": "onnx-fp32",
            "backend_spec": SimpleNamespace(runtime="onnxruntime", requested="CPUExecutionProvider")}


def test_an_entry_with_no_other_board_keeps_what_the_host_meter_saw():
    meter = _meter()
    ctx = Ctx(meter)
    fan_out(ctx, [_entry()], [Session(meter.spec, answering=True)], advance=lambda: None)
    (entry,) = ctx.recorded
    assert entry["status"] == "failed" and entry["failure"] == "infrastructure" and entry["board"] == "pi-a"
    assert entry["reason"] == f"{WHY} (no other board of the fan-out to retry it on)"
    block = entry["meter"]
    assert block["energy_mj_per_inference"] is None
    assert block["summary"]["power"]["energy_reason"] == f"job failed: {WHY}"
    assert [v for _, v in block["readings_mw"]] == [1800.0 + 10 * i for i in range(6)]


def test_an_entry_left_when_every_board_is_gone_keeps_it_too():
    meter = _meter()
    ctx = Ctx(meter)
    session = Session(meter.spec, answering=False)
    with pytest.raises(BoardLost):
        fan_out(ctx, [_entry()], [session], advance=lambda: None)
    (entry,) = ctx.recorded
    assert session.released and entry["reason"] == f"{WHY} (every board of the fan-out is gone)"
    assert entry["meter"]["summary"]["power"]["energy_reason"] == f"job failed: {WHY}"


def test_no_host_meter_no_meter_block():
    ctx = Ctx(None)  # the board's own probes: a failed job's board telemetry is not recorded
    fan_out(ctx, [_entry()], [Session(None, answering=True)], advance=lambda: None)
    (entry,) = ctx.recorded
    assert entry["status"] == "failed" and "meter" not in entry
