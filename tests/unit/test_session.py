"""Issue 19: one Session contract for where jobs run (harness/launchers/session.py): LocalSession and a remote session
on a fake SSH launcher answer the same questions, the factory opens the kind the settings name, and a Where with
conflicting fields is one UsageError line."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from harness import specs
from harness.errors import UsageError
from harness.launchers import remote as remote_mod
from harness.launchers.local import LocalLauncher
from harness.launchers.remote import RemoteSession
from harness.launchers.session import EmulatedSession, LocalSession, Session, Where, open_session
from harness.scenarios.orchestrate import RunConfig
from harness.targets import target_status

BACKENDS = [{"runtime": "onnxruntime", "requested": "cpu", "available": True, "reason": None},
            {"runtime": "tflite", "requested": "xnnpack", "available": False, "reason": "no tflite_runtime"}]


class FakeSSH:
    def __init__(self, answers: bool = True):
        self.answers = answers

    def run(self, cmd, timeout=None):
        return SimpleNamespace(returncode=0 if self.answers else 255)


class FakeSSHLauncher:
    """What RemoteSession uses of an SSHLauncher: board, health_report, ssh, describe, close."""

    name = "ssh"

    def __init__(self, name: str, *, answers: bool = True):
        self.board = SimpleNamespace(name=name, address=f"pi@{name}.lab:22")
        self.health_report = {"backends": BACKENDS, "fingerprint": {"memory_total_mb": 3906}}
        self.ssh = FakeSSH(answers)
        self.closed = False

    def describe(self):
        return {"kind": "ssh", "board": self.board.name, "address": self.board.address}

    def close(self):
        self.closed = True


def test_local_session_keeps_the_contract_with_this_machines_answers():
    target = specs.get_target("cpu")
    s = LocalSession(target, timeout_s=12.0)
    assert isinstance(s, Session) and isinstance(s.launcher, LocalLauncher) and s.launcher.timeout_s == 12.0
    assert s.remote is False and s.board_name is None and s.board_address is None
    assert s.health() == target_status(["cpu"])[0]  # planning: this machine's own check
    assert s.availability() is None
    assert s.describe() == s.launcher.describe() and s.describe()["kind"] == "local"
    s.note(True, "worker killed")  # nothing counts a local worker's failures
    assert s.reachable() is True
    assert s.power_cycle("hung", "e1") is None and s.failover() is None and s.power_cycles == []
    assert s.console_tail() is None
    mb, what = s.memory()
    assert mb > 0 and "this machine" in what
    s.close()


def test_a_remote_session_answers_from_its_boards_health_report_and_moves_on_failover():
    noted = []
    second = FakeSSHLauncher("pi-2")
    s = RemoteSession(FakeSSHLauncher("pi-1"), failover=lambda: second,
                      lease=lambda: {"place": "pi-1", "coordinator": "c:20408"},
                      note=lambda place, infra, reason: noted.append((place, infra, reason)))
    first = s.launcher
    assert isinstance(s, Session) and s.remote is True
    assert (s.board_name, s.board_address) == ("pi-1", "pi@pi-1.lab:22")
    assert s.health() == {"available": True, "backends": BACKENDS}
    available = s.availability()
    assert available(SimpleNamespace(runtime="onnxruntime", requested="cpu")) == (True, None)
    assert available(SimpleNamespace(runtime="tflite", requested="xnnpack")) == (False, "no tflite_runtime")
    assert available(SimpleNamespace(runtime="ncnn", requested="vulkan"))[0] is False  # not checked: not available
    assert s.memory()[0] == 3906.0  # the board's report, not this machine's memory
    assert s.describe()["labgrid"] == {"place": "pi-1", "coordinator": "c:20408"}
    s.note(True, "ssh dropped")
    assert noted == [("pi-1", True, "ssh dropped")]
    assert s.reachable() is True
    assert s.power_cycle("hung", "e1") is None  # no power switch in its inventory
    assert s.console_tail() is None  # no console
    assert s.failover() is second and s.launcher is second and s.board_name == "pi-2"
    assert s.describe()["earlier"][0]["board"] == "pi-1"
    s.close()
    assert second.closed and not first.closed  # the failover's opener lets go of the first board itself


def test_a_remote_session_that_stops_answering_is_not_reachable():
    assert RemoteSession(FakeSSHLauncher("pi-1", answers=False)).reachable() is False


def cfg(**kw) -> RunConfig:
    return RunConfig(**kw)


@pytest.mark.parametrize("remote, emulate, kind", [
    (None, None, "local"),
    ({}, None, "local"),
    (None, "arm64:cortex-a76", "emulated"),
    ({"device": "pi@10.0.0.5"}, None, "device"),
    ({"place": "pi-1", "pool": None}, None, "place"),
    ({"pool": "target=rpi", "boards": 3, "pool_wait_s": 60.0}, None, "pool"),
])
def test_where_is_built_once_from_the_run_settings(remote, emulate, kind):
    w = Where.from_settings(cfg(remote=remote, emulate=emulate))
    assert w.kind == kind and w.emulate == emulate
    with pytest.raises(Exception):
        w.kind = "local"  # frozen
    if remote:
        assert {k: v for k, v in w.remote().items() if v} == {k: v for k, v in remote.items() if v}
    assert w.fanout == (kind == "pool" and remote.get("boards", 1) > 1)


@pytest.mark.parametrize("remote, emulate, words", [
    ({"device": "pi@h", "pool": "target=rpi"}, None, "--device and --pool together"),
    ({"place": "pi-1"}, "arm64", "--emulate with --place"),
    ({"device": "pi@h", "boards": 2}, None, "--boards 2"),
    ({"pool": "target=rpi", "boards": 0}, None, "--boards 0"),
])
def test_a_where_with_conflicting_fields_is_one_usage_line(remote, emulate, words):
    with pytest.raises(UsageError) as exc:
        Where.from_settings(cfg(remote=remote, emulate=emulate))
    assert words in exc.value.message and "\n" not in exc.value.message


def test_a_where_whose_kind_contradicts_its_fields_is_refused():
    with pytest.raises(UsageError, match="does not match"):
        Where(kind="local", device="pi@h")
    with pytest.raises(UsageError, match="unknown kind"):
        Where(kind="lava")


def test_the_factory_opens_the_kind_the_settings_name(monkeypatch):
    target = specs.get_target("cpu")
    calls = []

    @contextmanager
    def fake_remote(where, target, variants, *, timeout_s, log=print, cache=None):
        calls.append(("one", where, variants, timeout_s))
        yield RemoteSession(FakeSSHLauncher("pi-1"))

    @contextmanager
    def fake_fanout(where, target, variants, *, timeout_s, log=print, cache=None):
        calls.append(("fanout", where))
        yield [RemoteSession(FakeSSHLauncher(f"pi-{i}")) for i in range(where.boards)]

    monkeypatch.setattr(remote_mod, "open_remote", fake_remote)
    monkeypatch.setattr(remote_mod, "open_fanout", fake_fanout)
    common = dict(variants=("onnx-fp32",), timeout_s=30.0, cache=None, log=lambda m: None)

    with open_session(Where(), target, **common) as sessions:
        assert [type(s) for s in sessions] == [LocalSession]
    assert calls == []

    w = Where.from_settings(cfg(remote={"device": "pi@10.0.0.5", "inventory": None}))
    with open_session(w, target, **common) as sessions:
        assert [s.board_name for s in sessions] == ["pi-1"]
    # the opener gets the typed selection itself, not the settings dict rebuilt from it
    assert calls[-1] == ("one", w, ("onnx-fp32",), 30.0) and calls[-1][1].device == "pi@10.0.0.5"

    w = Where.from_settings(cfg(remote={"pool": "target=rpi", "boards": 2}))
    with open_session(w, target, **common) as sessions:
        assert [s.board_name for s in sessions] == ["pi-0", "pi-1"]
    assert calls[-1] == ("fanout", w) and w.boards == 2


def test_the_factory_opens_the_emulated_board_and_closes_what_it_opened(monkeypatch, tmp_path):
    from harness.launchers import emulated

    target = specs.get_target("rpi")
    made = []

    def fake_make_launcher(kind, target, cache, *, timeout_s, log=print):
        launcher = LocalLauncher(timeout_s=timeout_s)
        made.append((kind, cache, launcher))
        return launcher

    monkeypatch.setattr(emulated, "make_launcher", fake_make_launcher)
    with open_session(Where(kind="emulated", emulate="arm64"), target, variants=(), timeout_s=5.0, cache=tmp_path,
                      log=lambda m: None) as sessions:
        (s,) = sessions
        assert isinstance(s, EmulatedSession) and s.launcher is made[0][2] and made[0][:2] == ("arm64", tmp_path)
        assert s.remote is False and s.board_name is None and s.power_cycle("hung", "e1") is None
        assert s.health()["available"] is True  # the board's readiness, not this machine's device check
        assert "emulated board" in s.memory()[1]


def test_bench_run_refuses_emulate_with_a_device_in_one_line_before_anything_runs(tmp_path, capsys):
    from harness.cli import main
    from harness.errors import EXIT_USAGE

    results = tmp_path / "results"
    code = main(["run", "--target", "rpi", "--emulate", "arm64", "--device", "pi@127.0.0.1", "--no-build",
                 "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1, err
    assert err[0].startswith("bench: error: where jobs run: --emulate with --device") and "Traceback" not in err[0]
    assert not results.exists() or not any(results.iterdir())  # no run was created
