"""bench gate knows the board: a baseline from another target/board/emulation is refused (exit 2, both named), one
baseline per board is chosen among several, baseline entries the run lost fail (or are skipped by policy), and an
emulated lane can skip latency checks."""

from __future__ import annotations

import argparse
import copy
import dataclasses

import pytest

from harness.commands import gate as gate_cmd
from harness.errors import EXIT_GATE_BOTH, EXIT_GATE_PERF, EXIT_OK, UsageError
from harness.report.board import board_of
from harness.report.gate import gate, parse_policy, select_baseline
from helpers_results import make_run

PI4 = {"device": {"model": "Raspberry Pi 4 Model B Rev 1.4", "l4t_release": "unknown"},
       "cpu": {"model": "Raspberry Pi 4 Model B Rev 1.4"}}
EMULATED = {"emulation": {"emulated": True, "by": "qemu-user 8.2.2", "cpu": "cortex-a72",
                          "board": "Raspberry Pi 4 (Cortex-A72)", "rootfs": "k"}}
LATENCY = '[[check]]\nkind="latency"\nstat="p90_ms"\nmax_slowdown_pct=10\n'
RETENTION = '[[check]]\nkind="retention"\nmetric="accuracy"\nmin=0.5\n'


def place(name: str, model_tag: str) -> dict:
    return {"kind": "ssh", "board": {"name": name, "address": "pi@10.0.0.9:22", "python": "python3",
                                     "tags": {"target": "rpi", "model": model_tag}}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    lat = {"onnx-fp32": 2.0, "onnx-int8": 1.5}
    slow = {"onnx-fp32": 2.0, "onnx-int8": 1.5 * 1.3}

    def pi(serial, tag, seed, latency=lat, **kw):
        return make_run(root, target="rpi", latency_ms=latency, seed=seed, launcher=place(f"rpi-{serial}", tag),
                        environment={**PI4, "serial_sha256": serial}, **kw)

    return {
        "root": root,
        "cpu": make_run(root, latency_ms=lat, seed=1),
        "pi_a": pi("aaaa000000000001", "pi4", 2),
        "pi_a_tonight": pi("aaaa000000000001", "pi4", 3, slow),
        "pi_b": pi("bbbb000000000002", "pi4", 4),
        "pi_c": pi("cccc000000000003", "pi5", 5),
        "pi_a_fp32_only": pi("aaaa000000000001", "pi4", 6, variants=("onnx-fp32",)),
        "emu": make_run(root, target="rpi", latency_ms=lat, seed=7, environment={**PI4, **EMULATED}),
        "emu_tonight": make_run(root, target="rpi", latency_ms=slow, seed=8, environment={**PI4, **EMULATED}),
    }


def test_board_identity_read_from_the_run(runs):
    b = board_of(runs["pi_a"].doc)
    assert (b.target, b.emulated, b.board_id, b.model, b.name, b.tags["model"]) == (
        "rpi", None, "serial:aaaa000000000001", "Raspberry Pi 4 Model B Rev 1.4", "rpi-aaaa000000000001", "pi4")
    assert board_of(runs["cpu"].doc).board_id == "host:5eed0f0f5eed0f0f"  # no serial: the hashed hostname
    assert board_of(runs["emu"].doc).emulated == "qemu-user -cpu cortex-a72"


@pytest.mark.parametrize(("run", "baseline", "rule", "why"), [
    ("pi_a_tonight", "cpu", "board", "different targets"),
    ("emu_tonight", "pi_a", "model", "one is emulated, the other real hardware"),
    ("pi_a_tonight", "pi_b", "board", "different board (serial or host)"),
    ("pi_a_tonight", "pi_c", "tag:model", "different tag 'model'"),
])
def test_a_baseline_from_another_board_is_refused_naming_both(runs, run, baseline, rule, why):
    pol = parse_policy(f'[baseline]\nmatch="{rule}"\n{LATENCY}')
    with pytest.raises(UsageError) as exc:
        gate(pol, runs[run], runs[baseline])
    msg = str(exc.value)
    assert exc.value.exit_code == 2 and why in msg and "\n" not in msg
    assert runs[run].run_id in msg and runs[baseline].run_id in msg  # both named, each with its board
    assert msg.count("target ") == 2


def test_a_baseline_without_a_serial_matches_by_hostname(runs):
    doc = copy.deepcopy(runs["pi_a"].doc)
    doc["environment"].pop("serial_sha256")  # a baseline accepted before serials were recorded
    old = dataclasses.replace(runs["pi_a"], doc=doc)
    assert gate(parse_policy(LATENCY), runs["pi_a_tonight"], old).exit_code == EXIT_GATE_PERF
    doc["environment"]["hostname_sha256"] = "0" * 16  # another host: refused
    with pytest.raises(UsageError, match="different board"):
        gate(parse_policy(LATENCY), runs["pi_a_tonight"], old)


def test_per_model_and_per_tag_rules_accept_another_unit_of_the_same_model(runs):
    for rule in ("model", "tag:model"):
        pol = parse_policy(f'[baseline]\nmatch="{rule}"\n{LATENCY}')
        assert gate(pol, runs["pi_a_tonight"], runs["pi_b"]).exit_code == EXIT_GATE_PERF  # 30% slower, same model
    # the same board under the default rule: the regression is found
    assert gate(parse_policy(LATENCY), runs["pi_a_tonight"], runs["pi_a"]).exit_code == EXIT_GATE_PERF


def test_the_command_picks_the_baseline_of_the_runs_board(runs, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir")
    gate_cmd.register(parser.add_subparsers())
    pol = tmp_path / "p.toml"
    pol.write_text(LATENCY)
    argv = ["--results-dir", str(runs["root"]), "gate", "--policy", str(pol)]
    for b in ("cpu", "pi_b", "pi_a", "emu"):
        argv += ["--baseline", runs[b].run_id]
    args = parser.parse_args([*argv, runs["pi_a_tonight"].run_id])
    assert args.func(args) == EXIT_GATE_PERF
    assert f"baseline {runs['pi_a'].run_id}: target rpi, real hardware" in capsys.readouterr().out
    # no candidate from this board: exit 2 naming each candidate and why
    args = parser.parse_args(["--results-dir", str(runs["root"]), "gate", "--policy", str(pol), "--baseline",
                              runs["pi_b"].run_id, "--baseline", runs["cpu"].run_id, runs["pi_a_tonight"].run_id])
    with pytest.raises(UsageError, match="no baseline for run .*different board.*different targets"):
        args.func(args)


def test_the_newest_baseline_of_the_board_supersedes_older_ones(runs):
    older = copy.deepcopy(runs["pi_a_fp32_only"].doc)
    older["created_utc"] = "2020-01-01T00:00:00Z"
    older_run = dataclasses.replace(runs["pi_a_fp32_only"], doc=older)
    pol = parse_policy(LATENCY)
    for order in ([older_run, runs["pi_a"]], [runs["pi_a"], older_run]):
        assert select_baseline(pol, runs["pi_a_tonight"], [runs["pi_b"], *order]) is runs["pi_a"]


def test_baseline_entries_missing_from_the_run_fail_or_are_skipped_by_policy(runs):
    run, base = runs["pi_a_fp32_only"], runs["pi_a"]
    res = gate(parse_policy(LATENCY + RETENTION), run, base)
    lost = [o for o in res.failures if o.entry == "gender-dlib--onnx-int8"]
    assert {o.category for o in lost} == {"perf", "fairness"} and res.exit_code == EXIT_GATE_BOTH
    assert all(f"ok in baseline {base.run_id}, not in this run" == o.message for o in lost)
    skip = gate(parse_policy('[baseline]\nmissing="skip"\n' + LATENCY + RETENTION), run, base)
    assert skip.exit_code == EXIT_OK
    assert [o.skipped for o in skip.outcomes if o.entry == "gender-dlib--onnx-int8"][0].endswith(
        "(skipped by policy: [baseline] missing = 'skip')")
    # an entry the run has but could not run tonight (unavailable) is lost too, with its reason
    doc = copy.deepcopy(runs["pi_a"].doc)
    doc["run_id"] = "tonight"
    doc["entries"][1].update(status="unavailable", reason="onnxruntime not installed on the board")
    res = gate(parse_policy(RETENTION), dataclasses.replace(runs["pi_a"], doc=doc), base)
    (fail,) = res.failures
    assert "unavailable in this run: onnxruntime not installed on the board" in fail.message


def test_emulated_lane_can_skip_latency(runs):
    run, base = runs["emu_tonight"], runs["emu"]
    assert gate(parse_policy(LATENCY), run, base).exit_code == EXIT_GATE_PERF
    res = gate(parse_policy(LATENCY + 'emulated="skip"\n'), run, base)
    assert res.exit_code == EXIT_OK and all(o.skipped.startswith("emulated lane (qemu-user -cpu cortex-a72)")
                                            for o in res.outcomes)
    # a real board's run under the same policy is still judged
    assert gate(parse_policy(LATENCY + 'emulated="skip"\n'), runs["pi_a_tonight"], runs["pi_a"]).exit_code == \
        EXIT_GATE_PERF


@pytest.mark.parametrize(("text", "error"), [
    ('[baseline]\nmatch="tag:"\n', "unknown baseline match 'tag:'"),
    ('[baseline]\nmatch="serial"\n', "valid: board, model, tag:KEY"),
    ('[baseline]\nmissing="warn"\n', "unknown missing 'warn'"),
    ('[baseline]\nbaseline="x"\n', "unknown key(s) baseline"),
    ('[baseline]\n' + LATENCY + 'emulated="ignore"\n', "unknown emulated 'ignore'"),
])
def test_bad_baseline_policy_is_a_usage_error(text, error):
    if "[[check]]" not in text:
        text += RETENTION
    with pytest.raises(UsageError) as exc:
        parse_policy(text, "p.toml")
    assert error in str(exc.value) and str(exc.value).startswith("p.toml")
