"""The fan-out's work queue (harness/scenarios/fanout.py) and its one-board-model rule (harness/launchers/remote.py
same_model), without boards; the loopback lab runs the real thing (tests/remote/test_fanout.py)."""

from __future__ import annotations

import threading

import pytest

from harness.errors import UsageError
from harness.launchers.remote import board_class, same_model
from harness.scenarios.fanout import _Queue


def report(model: str, machine: str = "aarch64", emulation=None) -> dict:
    return {"machine": machine, "emulation": emulation,
            "fingerprint": {"device": {"model": model}, "cpu": {"model": "Cortex-A76"}, "hostname_sha256": "ab"}}


def test_boards_of_one_model_pass_and_a_mix_is_refused_naming_both():
    pi5 = report("Raspberry Pi 5 Model B Rev 1.0")
    same_model([("pi5-a", {"target": "rpi"}, pi5), ("pi5-b", {"target": "rpi"}, dict(pi5))], "rpi")
    pi4 = report("Raspberry Pi 4 Model B Rev 1.4")
    with pytest.raises(UsageError) as exc:
        same_model([("pi5-a", {"target": "rpi"}, pi5), ("pi4-a", {"target": "rpi"}, pi4)], "rpi")
    msg = exc.value.message
    assert "pi5-a" in msg and "pi4-a" in msg and "Pi 4" in msg and "--each" in msg and "\n" not in msg
    # the target profile (the place's tag) and emulated-or-real are part of the class too
    assert board_class({"target": "rpi"}, pi5, "rpi") != board_class({"target": "jetson"}, pi5, "rpi")
    emu = report("Raspberry Pi 5 Model B Rev 1.0", emulation={"by": "qemu-user 7.2", "cpu": "cortex-a76"})
    with pytest.raises(UsageError, match="emulated"):
        same_model([("pi5-a", {"target": "rpi"}, pi5), ("rpi-emu", {"target": "rpi"}, emu)], "rpi")


def test_a_board_name_from_the_pool_is_shown_as_text():
    with pytest.raises(UsageError) as exc:
        same_model([("a", {}, report("X")), ("b\x1b[31m", {}, report("Y"))], "cpu")
    assert "\x1b" not in exc.value.message and "\\x1b" in exc.value.message


def test_queue_hands_each_entry_out_once_and_a_requeued_one_to_another_board():
    lock = threading.Lock()
    q = _Queue([{"entry": e} for e in "abc"], lock)
    with lock:
        first = q.take("A")
        second = q.take("B")
        assert [first.entry["entry"], second.entry["entry"]] == ["a", "b"]
        first.avoid.add("A")
        q.done(requeued=first)            # A failed "a": back on the queue, not for A
        assert q.take("A").entry["entry"] == "c"
        q.done()
        q.done()                          # B finished "b"
    taken: list[str] = []

    def board_a():  # only "a" is left and A may not take it: A stops once nothing runs anywhere
        with lock:
            assert q.take("A") is None
            taken.append("A stopped")

    t = threading.Thread(target=board_a)
    t.start()
    t.join(5)
    assert taken == ["A stopped"]
    with lock:
        assert q.take("B").entry["entry"] == "a"   # the other board takes it
        q.done()
        assert q.take("B") is None


def test_queue_waits_while_another_board_may_still_give_an_entry_back():
    lock = threading.Lock()
    q = _Queue([{"entry": "a"}], lock)
    got: list = []
    with lock:
        item = q.take("A")

    def board_b():
        with lock:
            got.append(q.take("B"))

    t = threading.Thread(target=board_b)
    t.start()
    t.join(0.3)
    assert t.is_alive() and not got  # B waits: A's entry may come back
    with lock:
        item.avoid.add("A")
        q.done(requeued=item)
    t.join(5)
    assert got and got[0].entry["entry"] == "a"


@pytest.mark.parametrize("flags, said", [
    (["--boards", "2"], "--boards takes the boards from a labgrid pool"),
    (["--each"], "--each takes the boards from a labgrid pool"),
    (["--pool", "target=cpu", "--boards", "0"], "--boards 0: must be at least 1"),
    (["--pool", "target=cpu", "--boards", "2", "--each"], "--boards with --each"),
    (["--pool", "target=cpu", "--each", "--resume", "RUN"], "--each with --resume"),
])
def test_fan_out_flags_are_checked_before_any_work(flags, said, monkeypatch, capsys, tmp_path):
    from harness.cli import main
    from harness.errors import EXIT_USAGE
    from harness.models import build
    from harness.scenarios import orchestrate

    def must_not_run(*a, **k):
        raise AssertionError("reached a build or a run with bad fan-out flags")

    monkeypatch.setattr(orchestrate, "run_benchmark", must_not_run)
    monkeypatch.setattr(build, "build", must_not_run)
    results = tmp_path / "results"
    code = main(["run", "--dataset", "london-frl", "--results-dir", str(results), "--cache-dir",
                 str(tmp_path / "cache"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and len(err.splitlines()) == 1 and said in err, err
    assert not results.exists() or not any(results.iterdir())
