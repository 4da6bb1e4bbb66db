"""`bench run --target cpu --source FILE` end to end: shared faces encoded into an H.264 file at a body camera's
rate (1280x720, 15 fps, 2 Mbit/s, libx264 through PyAV) run through the local launcher: every frame decoded,
detected, aligned and embedded, each stage timed, frames per second end to end, the validity stamp; the device side
of the job imports no workstation library."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FPS, SECONDS, SIZE, KBPS = 15, 3, (1280, 720), 2000
FACES = ("fairface-sample/V1/Black/Black_Female_20s.jpg", "fairface-sample/V1/Black/Black_Male_30s.jpg",
         "london-frl/neutral_front/001_03.jpg")
HEAVY = ("pandas", "scipy", "matplotlib", "cv2", "rich")


def encode_body_camera(data_root: Path, path: Path) -> int:
    """Each face centred on a black 1280x720 frame for one second, H.264 at 2 Mbit/s; returns the frames encoded."""
    pytest.importorskip("av")
    from harness.camera.clip import encode_clip

    faces = [data_root / name for name in FACES[:SECONDS]]
    missing = [f for f in faces if not f.is_file()]
    if missing:
        pytest.skip(f"{missing[0]}: not in the shared data")
    return encode_clip(faces, path, size=SIZE, fps=FPS, kbps=KBPS, hold_s=1.0)


def test_video_source_through_the_local_launcher(built_packs: Path, data_root: Path, tmp_path: Path):
    video = tmp_path / "bodycam.mp4"
    n_frames = encode_body_camera(data_root, video)
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", "--target", "cpu", "--source", str(video), "--min-count", str(n_frames), "--min-duration", "0.1",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(built_packs), "--no-build"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()[-2000:]
    run_dir = Path(out.getvalue().splitlines()[-1])
    doc = json.loads((run_dir / "video.json").read_text())
    assert doc["status"] == "ok" and doc["launcher"]["kind"] == "local"
    assert doc["frames"] == n_frames
    assert doc["stream"]["codec"] == "h264" and (doc["stream"]["width"], doc["stream"]["height"]) == SIZE
    assert doc["fps"] > 0
    for stage in ("decode", "detect", "align", "embed"):
        s = doc["stages"][stage]
        assert s["count"] == n_frames and s["p50_ms"] > 0, stage
    # every frame's stages add up to its end-to-end time, and fps is frames over their sum
    assert doc["end_to_end"]["count"] == n_frames
    assert doc["fps"] == pytest.approx(n_frames / doc["end_to_end"]["duration_s"])
    assert sum(doc["stages"][s]["duration_s"] for s in doc["stages"]) == pytest.approx(doc["end_to_end"]["duration_s"])
    # a face on every frame: the detector finds the shared faces through the encoder
    assert doc["frames_with_face"] >= n_frames * 0.9
    assert doc["validity"]["status"] in ("VALID", "INVALID")
    assert all(isinstance(r, str) for r in doc["validity"]["reasons"])
    assert doc["backend"]["ok"] is True
    assert f"{n_frames} frames" in out.getvalue()

    # The device side of the same job needs only numpy, psutil, the runtime and PyAV.
    probe = ("import runpy, sys, json; sys.argv = ['harness.device', {job!r}, '--out', {out!r}]; code = 0\n"
             "try:\n    runpy.run_module('harness.device', run_name='__main__')\nexcept SystemExit as e:\n"
             "    code = e.code\nprint(json.dumps({{'code': code, 'heavy': [m for m in {heavy!r} if m in sys.modules]}}))")
    code = probe.format(job=str(run_dir / "job" / "job.json"), out=str(tmp_path / "again"), heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=run_dir / "job", env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 0, "heavy": []}, done.stderr[-2000:]


@pytest.mark.arm64
def test_video_source_on_the_local_launcher_and_the_emulated_board(built_packs: Path, data_root: Path,
                                                                   tmp_path: Path):
    """`bench run --source FILE --target rpi --emulate arm64`: the same H.264 file (shared faces at a body camera's
    2 Mbit/s) through the local launcher and the emulated aarch64 board (the video file travels as the job's file,
    PyAV from the board's overlay of aarch64 wheels): every frame decoded and a face found in each on both, the
    board's timings INVALID.
    Then the board without PyAV: one line, "unavailable on this board: PyAV not installed", exit 3. Slow (qemu:
    about a minute a frame pair on 2 cores); select with -k emulated."""
    from harness.errors import EXIT_UNAVAILABLE, UnavailableError
    from harness.scenarios.video import run_video

    from test_arm64_board import _need_board  # skips without root and the board's tools (fails under CI)

    _need_board()
    pytest.importorskip("av")
    from harness.camera.clip import encode_clip

    faces = [data_root / name for name in FACES[:2]]
    video = tmp_path / "bodycam.mp4"
    n = encode_clip(faces, video, size=(640, 360), fps=FPS, kbps=KBPS, hold_s=0.2)
    docs = {}
    for where, extra in (("local", ["--target", "cpu"]), ("board", ["--target", "rpi", "--emulate", "arm64"])):
        out, err = io.StringIO(), io.StringIO()
        argv = ["run", *extra, "--source", str(video), "--variant", "onnx-int8", "--limit", str(n), "--min-count",
                str(n), "--min-duration", "0", "--threads", "1", "--results-dir", str(tmp_path / where),
                "--cache-dir", str(built_packs), "--no-build"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(argv) == 0, err.getvalue()[-2000:]
        docs[where] = json.loads((Path(out.getvalue().splitlines()[-1]) / "video.json").read_text())
    local, board = docs["local"], docs["board"]
    assert local["launcher"]["kind"] == "local" and board["launcher"]["kind"] == "emulated-arm64"
    assert board["environment"]["emulation"]["cpu"] == "cortex-a72"
    assert board["environment"]["cpu"]["arch"] == "aarch64" and local["environment"]["cpu"]["arch"] == "x86_64"
    assert board["source"]["sha256"] == local["source"]["sha256"]
    # Every frame holds one face, found on both machines. The face COUNT may differ: int8 kernels differ between
    # x86 and aarch64 (BlazeFace int8's extra low-score boxes were seen on the board), so it is not compared.
    assert board["frames"] == local["frames"] == n
    assert board["frames_with_face"] == local["frames_with_face"] == n
    assert board["validity"]["status"] == "INVALID" and board["validity"]["reasons"][0].startswith("emulated")
    assert all(board["stages"][s]["count"] == n for s in ("decode", "detect", "align", "embed"))

    with pytest.raises(UnavailableError) as info:
        run_video(str(video), target_id="rpi", models=(), variant="onnx-int8", cache=built_packs,
                  results_root=tmp_path / "nopyav", threads=1, min_duration_s=0, min_count=1, max_frames=1,
                  timeout_s=900, log=lambda m: None, emulate="arm64", board_pyav=False)
    assert "unavailable on this board: PyAV not installed" in info.value.message
    assert "\n" not in info.value.message and info.value.exit_code == EXIT_UNAVAILABLE
