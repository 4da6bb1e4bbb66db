"""Profiles mean what they say: board checks come from the TOML, the reference target from `reference = true`,
the coral profile's board is an attached Edge TPU, and its compiled variant is the pack's (exit 3 naming the command
that compiles it when it is missing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import specs, targets
from harness.cli import main
from harness.errors import EXIT_UNAVAILABLE, InputError, UnavailableError
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


def test_coral_without_the_compiled_variant_is_exit_3_naming_the_command(built_packs, capsys, tmp_path,
                                                                         monkeypatch):
    # An Edge TPU and libedgetpu present (this machine has neither: the board and availability checks are the only
    # stand-ins), tflite-int8@edgetpu not compiled: one line naming it and the command that makes it.
    monkeypatch.setattr(targets, "backend_availability", lambda b: (True, None))
    monkeypatch.setattr(targets, "board_matches", lambda board: True)
    monkeypatch.setattr(orchestrate, "backend_availability", lambda b: (True, None))
    code = main(["run", "--target", "coral", "--model", "gender-dlib", "--no-build", "--results-dir", str(tmp_path),
                 "--cache-dir", str(built_packs)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_UNAVAILABLE
    assert err == ("bench: error: gender-dlib tflite-int8@edgetpu: not built yet (bench models build --model "
                   "gender-dlib --compile edgetpu)")


def test_a_hand_placed_compiled_file_is_not_a_compiled_variant(built_packs, monkeypatch, tmp_path):
    """A *_edgetpu.tflite put beside the pack by hand has no record (compiler, version, source sha256): not planned."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(Path(built_packs) / "packs" / "gender-dlib", cache / "packs" / "gender-dlib")
    (cache / "packs" / "gender-dlib" / "tflite-int8_edgetpu.tflite").write_bytes(b"stand-in for a compiler's output")
    cfg = orchestrate.RunConfig(target="coral", models=("gender-dlib",))
    with pytest.raises(UnavailableError, match=r"--compile edgetpu"):
        orchestrate.plan_entries(specs.get_target("coral"), cfg, cache, availability=lambda b: (True, None))


def test_the_coral_board_is_an_edge_tpu_on_usb_or_pcie(monkeypatch, tmp_path):
    """[board]: the USB Accelerator by its USB ids (before/after firmware load), an M.2/PCIe TPU by /dev/apex_0."""
    board = dict(specs.get_target("coral").board)
    monkeypatch.setattr(targets, "_device_model", lambda: "")
    usb = tmp_path / "usb"
    monkeypatch.setattr(targets, "USB_DEVICES", usb)
    hub = usb / "usb1"
    hub.mkdir(parents=True)
    (hub / "idVendor").write_text("1d6b\n")
    (hub / "idProduct").write_text("0002\n")
    (usb / "1-1:1.0").mkdir()  # an interface: no ids
    board["release_file"] = str(tmp_path / "apex_0")
    assert not targets.board_matches(board)
    tpu = usb / "2-1"
    tpu.mkdir()
    (tpu / "idVendor").write_text("18d1\n")
    (tpu / "idProduct").write_text("9302\n")
    assert targets.board_matches(board)
    shutil.rmtree(tpu)
    (tmp_path / "apex_0").write_text("")
    assert targets.board_matches(board)
