"""The emulated arm64 board's pieces that need no root or qemu: recipe key, cpuinfo, the command line it runs,
input staging, target checks and the INVALID marking of emulated timings. The board itself is exercised for
real by tests/e2e/test_arm64_board.py."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from harness import specs
from harness.environment import parse_cpuinfo
from harness.errors import UnavailableError, UsageError
from harness.jobs import BackendRequest, FileRef, InputArray, Job
from harness.launchers.arm64_board import CPUS, IN_DIR, OUT_DIR, SRC, Arm64Board, Recipe, cpuinfo_text
from harness.launchers.emulated import (
    EmulatedLauncher, check_target, emulation_reason, invalidate_timings, stage_inputs,
)


def test_recipe_key_follows_the_recipe():
    base = Recipe()
    assert base.key() == Recipe().key()
    assert base.key().startswith("bookworm-arm64-")
    assert Recipe(wheels=("numpy==2.4.6",)).key() != base.key()
    assert Recipe(packages=("python3", "git")).key() != base.key()


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_cpuinfo_is_arm_and_parses(cpu):
    text = cpuinfo_text(cpu)
    parsed = parse_cpuinfo(text)
    assert parsed["flags"] == sorted(CPUS[cpu]["features"].split())
    assert text.count("processor\t:") == CPUS[cpu]["cores"]
    assert f"CPU part\t: {CPUS[cpu]['part']}" in text
    assert parsed["model"] == f"{CPUS[cpu]['board']} (emulated by qemu-user, -cpu {cpu})"


def test_unknown_cpu_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown emulated cpu 'pentium'"):
        Arm64Board(tmp_path, cpu="pentium")


def test_run_before_ensure_is_unavailable(tmp_path):
    with pytest.raises(UnavailableError, match="not built or restored"):
        Arm64Board(tmp_path).binds(src=tmp_path)


def _ready_board(tmp_path: Path) -> Arm64Board:
    board = Arm64Board(tmp_path / "cache")
    board.home.mkdir(parents=True)
    (board.home / "READY").write_text(board.key)
    return board


def test_command_mounts_privately_and_pins_the_cpu(tmp_path):
    board = _ready_board(tmp_path)
    binds = board.binds(src=tmp_path / "src", in_dir=tmp_path / "in", out_dir=tmp_path / "out")
    cmd = board.command(["python3", "-m", "harness.device", f"{IN_DIR}/job.json"], binds=binds)
    assert cmd[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    script = cmd[-1].splitlines()
    root = str(board.root)
    assert f"mount --bind {shlex.quote(str(board.cache / 'boards' / 'cpuinfo-cortex-a72'))} {root}/proc/cpuinfo" \
        in script
    assert f"mount --bind -o ro {tmp_path / 'src'} {root}{SRC}" in script
    assert f"mount --bind -o ro {tmp_path / 'in'} {root}{IN_DIR}" in script
    assert f"mount --bind {tmp_path / 'out'} {root}{OUT_DIR}" in script  # the only writable bind
    last = shlex.split(script[-1])
    assert last[:4] == ["exec", "chroot", root, "/usr/bin/env"]
    assert "QEMU_CPU=cortex-a72" in last and last[-4:] == ["python3", "-m", "harness.device", f"{IN_DIR}/job.json"]
    assert (board.cache / "boards" / "cpuinfo-cortex-a72").read_text() == cpuinfo_text("cortex-a72")


def _job(model: str, inputs: str) -> Job:
    return Job(entry="m--onnx-int8", task="gender", model=FileRef(model, "a" * 64), layout=None,
               inputs=InputArray(FileRef(inputs, "b" * 64), mean=(0.0,), scale=1.0),
               backend=BackendRequest(runtime="onnxruntime", provider="CPUExecutionProvider"),
               samples=(("s0", 0),), pool_rows=(0,))


def test_stage_inputs_resolves_symlinks_into_plain_files(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "model.onnx").write_bytes(b"model")
    (real / "chips.npy").write_bytes(b"chips")
    links = tmp_path / "in"
    links.mkdir()
    for name in ("model.onnx", "chips.npy"):
        (links / name).symlink_to(real / name)
    staged = stage_inputs(_job("model.onnx", "chips.npy"), links, tmp_path / "staged")
    for name, data in (("model.onnx", b"model"), ("chips.npy", b"chips")):
        assert not (staged / name).is_symlink() and (staged / name).read_bytes() == data


def test_launcher_worker_command_runs_the_device_entry_point_inside(tmp_path):
    launcher = EmulatedLauncher(_ready_board(tmp_path), timeout_s=5)
    cmd = launcher.command(tmp_path / "staged" / "job.json", tmp_path / "out")
    last = shlex.split(cmd[-1].splitlines()[-1])
    i = last.index("harness.device")
    assert last[i + 1:i + 4] == [f"{IN_DIR}/job.json", "--out", OUT_DIR]
    assert "--parent-pid" in last and "--watch-stdin" in last
    assert launcher.describe()["emulation"]["emulated"] is True


def test_only_cpu_targets_can_be_emulated():
    check_target(specs.get_target("rpi"))
    check_target(specs.get_target("cpu"))
    with pytest.raises(UsageError, match="cannot run on the emulated arm64 board"):
        check_target(specs.get_target("cuda"))


def test_invalidate_timings_marks_every_measured_entry_once():
    emulation = {"emulated": True, "by": "qemu-user 7.2", "cpu": "cortex-a72"}
    doc = {"launcher": {"kind": "emulated-arm64", "emulation": emulation}, "entries": [
        {"entry": "a", "speed": {"validity": {"status": "VALID", "reasons": []}}},
        {"entry": "b", "speed": {"validity": {"status": "INVALID", "reasons": ["count 3 < min_count 100"]}}},
        {"entry": "c", "status": "failed"}]}
    assert invalidate_timings(doc) == 2
    assert invalidate_timings(doc) == 2  # resume: no second copy of the reason
    reason = emulation_reason(emulation)
    assert "emulated" in reason and "qemu-user 7.2" in reason
    a, b = (doc["entries"][i]["speed"]["validity"] for i in (0, 1))
    assert a == {"status": "INVALID", "reasons": [reason]}
    assert b["reasons"] == [reason, "count 3 < min_count 100"]
    assert invalidate_timings({"launcher": {"kind": "local"}, "entries": doc["entries"]}) == 0


@pytest.mark.parametrize("kind", ["arm64:pentium", "riscv64", "x86_64:cortex-a72", "arm64@buster",
                                  "arm64:cortex-a76@sid"])
def test_emulate_kind_is_checked_before_any_board_work(kind, tmp_path):
    from harness.launchers.emulated import make_launcher

    with pytest.raises(UsageError, match="valid: arm64, optionally with the emulated core as arm64:CPU"):
        make_launcher(kind, specs.get_target("rpi"), tmp_path, timeout_s=1)


def test_bullseye_is_a_recipe_of_its_own_python_3_9_cached_under_its_key():
    from harness.launchers.arm64_board import DEFAULT_SUITE, RECIPES

    bullseye = RECIPES["bullseye"]
    assert DEFAULT_SUITE == "bookworm" and RECIPES["bookworm"] == Recipe()
    assert bullseye.suite == "bullseye" and bullseye.python_version == "3.9"
    assert bullseye.key().startswith("bullseye-arm64-") and bullseye.key() != Recipe().key()
    board = Arm64Board(Path("/cache"), recipe=bullseye)
    assert board.tarball == Path(f"/cache/rootfs/{bullseye.key()}.tar.zst")
    assert board.emulation["rootfs"] == bullseye.key()  # what the run records about the board


@pytest.mark.parametrize("kind, suite, cpu", [("arm64@bullseye", "bullseye", "cortex-a72"),
                                              ("arm64:cortex-a76@bullseye", "bullseye", "cortex-a76"),
                                              ("arm64", "bookworm", "cortex-a72")])
def test_emulate_kind_chooses_the_root_filesystem(kind, suite, cpu, tmp_path, monkeypatch):
    import harness.launchers.emulated as emulated

    monkeypatch.setattr(emulated.EmulatedLauncher, "health", lambda self: (True, None))
    launcher = emulated.make_launcher(kind, specs.get_target("rpi"), tmp_path, timeout_s=1, log=lambda m: None)
    assert launcher.board.recipe.suite == suite and launcher.board.cpu == cpu


def test_missing_tools_make_the_board_unavailable_with_the_packages_named(tmp_path, monkeypatch):
    import harness.launchers.arm64_board as board_mod
    from harness.launchers.emulated import make_launcher

    monkeypatch.setattr(board_mod.shutil, "which", lambda tool: None if tool == "mmdebstrap" else "/usr/bin/" + tool)
    with pytest.raises(UnavailableError) as e:
        make_launcher("arm64", specs.get_target("rpi"), tmp_path, timeout_s=1)
    assert str(e.value) == ("the emulated arm64 board is unavailable: arm64 board: missing tools; install them with "
                            "apt-get install -y mmdebstrap")
    assert e.value.exit_code == 3


def test_launcher_worker_command_carries_a_search_jobs_blas_threads_through_env_i(tmp_path):
    launcher = EmulatedLauncher(_ready_board(tmp_path), timeout_s=5)
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    last = shlex.split(launcher.command(tmp_path / "staged" / "job.json", tmp_path / "out", env)[-1].splitlines()[-1])
    assert all(f"{k}=1" in last for k in env) and last.index("OMP_NUM_THREADS=1") < last.index("harness.device")
    plain = shlex.split(launcher.command(tmp_path / "staged" / "job.json", tmp_path / "out")[-1].splitlines()[-1])
    assert not any("NUM_THREADS" in w for w in plain)


def test_board_extra_that_pip_cannot_fetch_is_unavailable_in_one_line(tmp_path):
    """Arm64Board.ensure_extra across the pip boundary: a wheel that does not exist for aarch64 (or no network)
    is "unavailable on this board: <what> not installed (...)", exit 3, and leaves no half-written folder."""
    from harness.errors import EXIT_UNAVAILABLE, UnavailableError

    board = Arm64Board(tmp_path, log=lambda m: None)
    with pytest.raises(UnavailableError) as info:
        board.ensure_extra("camera", ("av==0.0.1",), "PyAV")
    msg = info.value.message
    assert msg.startswith("unavailable on this board: PyAV not installed (pip could not fetch av==0.0.1 for aarch64")
    assert "\n" not in msg and info.value.exit_code == EXIT_UNAVAILABLE
    left = [p for p in (tmp_path / "boards" / "extras").iterdir()]
    assert len(left) == 1 and left[0].suffix == ".lock"  # only the lock: no half-written site


def test_video_job_stages_its_models_and_video_and_binds_the_pyav_overlay(tmp_path):
    from harness.jobs import BackendRequest, FileRef, VideoJob, VideoModel
    from harness.launchers.arm64_board import EXTRA

    for name in ("det.onnx", "emb.onnx", "source.mp4"):
        (tmp_path / name).write_bytes(name.encode())
    links = tmp_path / "links"
    links.mkdir()
    for name in ("det.onnx", "emb.onnx", "source.mp4"):
        (links / name).symlink_to(tmp_path / name)

    def model(name):
        return VideoModel(file=FileRef(name, "0" * 64), layout="NCHW", mean=(127.5,) * 3, scale=1 / 127.5, size=128,
                          align_points=("left_eye", "right_eye"), align_template="arcface", score_threshold=0.5)

    job = VideoJob(entry="video--x", detector=model("det.onnx"), embedder=model("emb.onnx"),
                   backend=BackendRequest(runtime="onnxruntime", provider="CPUExecutionProvider"),
                   source=FileRef("source.mp4", "0" * 64))
    staged = stage_inputs(job, links, tmp_path / "staged")
    assert sorted(p.name for p in staged.iterdir()) == ["det.onnx", "emb.onnx", "source.mp4"]
    assert not any(p.is_symlink() for p in staged.iterdir())
    launcher = EmulatedLauncher(_ready_board(tmp_path), extra_site=tmp_path / "site")
    launcher._binds = [(tmp_path / "site", EXTRA, "ro")]
    script = launcher.command(tmp_path / "job.json", tmp_path / "out")[-1]
    assert f"PYTHONPATH=/opt/bench/site:{EXTRA}:/opt/bench/src" in script
    assert f"mount --bind -o ro {tmp_path / 'site'} " in script
