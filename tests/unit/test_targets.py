"""Profiles mean what they say: board checks come from the TOML, the reference target from `reference = true`,
and the coral profile's <variant>_edgetpu.tflite lookup is real (exit 3 naming the path when it is missing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import specs, targets
from harness.cli import main
from harness.errors import EXIT_UNAVAILABLE, InputError
from harness.scenarios import orchestrate


def test_board_checks_live_in_the_profiles():
    assert dict(specs.get_target("rpi").board) == {"name": "Raspberry Pi", "devicetree_model_prefix": "Raspberry Pi"}
    assert specs.get_target("jetson").board["release_file"] == "/etc/nv_tegra_release"
    assert not specs.get_target("cpu").board


@pytest.mark.parametrize("model, release_exists, expected", [
    ("Raspberry Pi 5 Model B Rev 1.0", False, {"rpi"}),
    ("NVIDIA Jetson Orin Nano Developer Kit", False, {"jetson"}),
    ("", True, {"jetson"}),
    ("QEMU Virtual Machine", False, set()),
])
def test_board_recognised_from_device_tree_or_release_file(monkeypatch, tmp_path, model, release_exists, expected):
    monkeypatch.setattr(targets, "_device_model", lambda: model)
    release = tmp_path / "nv_tegra_release"
    if release_exists:
        release.write_text("# R36 (release), REVISION: 4.0\n")
    boards = {tid: dict(specs.get_target(tid).board) for tid in ("rpi", "jetson")}
    boards["jetson"]["release_file"] = str(release)
    assert {tid for tid, b in boards.items() if targets.board_matches(b)} == expected


def test_unknown_board_key_names_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "toy.toml"
    bad.write_text('id = "toy"\n[board]\nmodel_regex = "x"\n[[backends]]\nruntime = "litert"\nvariants = []\n')
    with pytest.raises(InputError, match=r"toy.toml: unknown key\(s\) in \[board\]: model_regex"):
        specs.load_target(bad)


def test_the_reference_target_is_the_profile_that_says_so(monkeypatch):
    assert targets.reference_target_ids() == ["cpu"]
    real = specs.get_target

    def cuda_is_reference(tid):
        t = real(tid)
        return type(t)(**{**t.__dict__, "reference": tid == "cuda"})

    monkeypatch.setattr(specs, "get_target", cuda_is_reference)
    assert targets.reference_target_id() == "cuda"


def test_coral_without_libedgetpu_is_exit_3(capsys, tmp_path):
    code = main(["run", "--target", "coral", "--no-build", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_UNAVAILABLE
    assert "target 'coral' is unavailable" in err and "libedgetpu.so.1 not found" in err


def test_coral_without_the_compiled_model_is_exit_3_naming_the_path(built_packs, capsys, tmp_path, monkeypatch):
    # libedgetpu present (this machine has none: the availability check is the only stand-in), compiled model not.
    monkeypatch.setattr(targets, "backend_availability", lambda b: (True, None))
    monkeypatch.setattr(orchestrate, "backend_availability", lambda b: (True, None))
    code = main(["run", "--target", "coral", "--model", "gender-dlib", "--no-build", "--results-dir", str(tmp_path),
                 "--cache-dir", str(built_packs)])
    err = capsys.readouterr().err.strip()
    compiled = Path(built_packs) / "packs" / "gender-dlib" / "tflite-int8_edgetpu.tflite"
    assert code == EXIT_UNAVAILABLE
    assert err.startswith(f"bench: error: {compiled}: no Edge TPU model; compile the pack with `edgetpu_compiler")
    assert len(err.splitlines()) == 1


def test_a_compiled_model_beside_the_pack_is_the_one_planned(built_packs, monkeypatch, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(Path(built_packs) / "packs" / "gender-dlib", cache / "packs" / "gender-dlib")
    compiled = cache / "packs" / "gender-dlib" / "tflite-int8_edgetpu.tflite"
    compiled.write_bytes(b"stand-in for edgetpu_compiler output")
    monkeypatch.setattr(orchestrate, "backend_availability", lambda b: (True, None))
    cfg = orchestrate.RunConfig(target="coral", models=("gender-dlib",))
    (e,) = orchestrate.plan_entries(specs.get_target("coral"), cfg, cache)
    assert e["status"] == "pending" and e["path"] == compiled
    from harness.models.fetch import sha256_file

    assert e["model_sha256"] == sha256_file(compiled)
