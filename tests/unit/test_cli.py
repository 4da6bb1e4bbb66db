"""The `bench` command line: help everywhere, usage errors as exit 2 with the valid ids, global options anywhere,
and the machine-readable `models list --json` contract."""

from __future__ import annotations

import argparse
import json

import pytest

from harness import specs
from harness.cli import COMMANDS, build_parser, main
from harness.errors import EXIT_OK, EXIT_USAGE

LIST_KEYS = {"model", "task", "variant", "format", "precision", "status", "flagged", "flag", "reason", "path", "sha256",
             "fidelity"}


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command path of the parser, found by walking it, so a new subcommand is covered automatically."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(prefix + (name,))
                paths += command_paths(sub, prefix + (name,))
    return paths


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's --help / usage errors
        return int(exc.code or 0)


def test_walk_finds_every_command():
    paths = command_paths(build_parser())
    assert {p[0] for p in paths} == set(COMMANDS)
    assert ("models", "list") in paths and ("models", "build") in paths


def test_root_help(capsys):
    assert exit_code(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "exit codes" in out and all(c in out for c in COMMANDS)


@pytest.mark.parametrize("path", command_paths(build_parser()), ids=lambda p: " ".join(p))
def test_every_subcommand_help_exits_zero(path, capsys):
    assert exit_code([*path, "--help"]) == EXIT_OK
    assert f"usage: bench {' '.join(path)}" in capsys.readouterr().out


def test_unknown_target_is_usage_error_listing_valid_ids(capsys, tmp_path):
    code = exit_code(["run", "--target", "nope", "--no-build", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "unknown target 'nope'" in err
    assert all(t in err for t in specs.target_ids())
    assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir()), "no run directory for a rejected command"


def test_unknown_model_in_build_is_usage_error(capsys, tmp_path):
    assert exit_code(["models", "build", "--model", "nope", "--cache-dir", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "gender-dlib" in err
    assert not any(tmp_path.iterdir()), "nothing fetched or built"


def test_unknown_flag_is_usage_error(capsys):
    assert exit_code(["targets", "--no-such-flag"]) == EXIT_USAGE
    assert "--no-such-flag" in capsys.readouterr().err


def test_global_options_after_the_subcommand(capsys, tmp_path):
    assert exit_code(["targets", "--json", "--cache-dir", str(tmp_path)]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert {r["target"] for r in rows} == set(specs.target_ids())
    # The hoisted --cache-dir really takes effect: an empty cache lists every variant as not built yet.
    assert exit_code(["models", "list", "--json", f"--cache-dir={tmp_path}"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 18 and {r["status"] for r in rows} == {"missing"}


def test_models_list_json(built_packs, capsys):
    assert exit_code(["models", "list", "--json", "--cache-dir", str(built_packs)]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 18
    for r in rows:
        assert LIST_KEYS <= set(r), f"{r.get('model')} {r.get('variant')}: missing {LIST_KEYS - set(r)}"
        assert r["variant"] == f"{r['format']}-{r['precision']}"
        assert r["status"] in ("built", "missing", "failed")
        # flagged: built outside fidelity tolerance, as the recorded figures say; never a reason not to run it
        assert r["flagged"] is (r["status"] == "built" and r["fidelity"]["within_tolerance"] is False)
        assert (r["flag"] or "").startswith("flagged: ") is r["flagged"]
        if r["status"] == "built":
            assert len(r["sha256"]) == 64 and r["path"].endswith(f"{r['variant']}.{r['format']}")
        else:
            assert r["reason"] and r["path"] is None
    assert {(r["model"], r["variant"]) for r in rows} == {(m, v) for m in specs.model_ids() for v in specs.VARIANTS}


def test_models_list_filters_by_model(built_packs, capsys):
    assert exit_code(["models", "list", "--json", "--model", "gender-dlib", "--cache-dir", str(built_packs)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and {r["model"] for r in rows} == {"gender-dlib"}
    assert {r["task"] for r in rows} == {"gender"}


def test_sigterm_ends_a_command_like_ctrl_c(monkeypatch, capsys):
    """A cancelled CI job sends SIGTERM: bench must exit 130 through its own handler, not die mid-write."""
    import os
    import signal

    import harness.commands.targets as targets_cmd

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the SIGTERM handler did not interrupt the command")

    monkeypatch.setattr(targets_cmd, "run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    from harness.cli import main

    assert main(["targets"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored for the embedding process


def test_root_help_lines_equal_what_each_command_registers():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {c.dest: c.help for c in sub._choices_actions} == COMMANDS


@pytest.mark.parametrize("argv, loaded, lean", [(["--help"], set(), True), (["worker", "--help"], {"worker"}, True),
                                                (["--results-dir", "run", "runs", "--help"], {"runs"}, False)])
def test_only_the_selected_command_module_is_imported(argv, loaded, lean):
    """`bench --help` and `bench worker` load no workstation library; any command loads only its own module."""
    import json
    import subprocess
    import sys

    from harness.paths import REPO_ROOT

    code = ("import sys\nfrom harness.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "import json\nprint(json.dumps(sorted(m.split('.')[-1] for m in sys.modules "
            "if m.startswith('harness.commands.'))))\n"
            "print(json.dumps(sorted(m for m in ('pandas', 'scipy', 'matplotlib', 'cv2', 'rich', 'onnxruntime') "
            "if m in sys.modules)))").format(argv=argv)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    commands, heavy = done.stdout.strip().splitlines()[-2:]
    assert json.loads(commands) == sorted(loaded), done.stderr[-1000:]
    if lean:
        assert json.loads(heavy) == []
