"""`bench run --source`: bad input is one line naming the file with its exit code, before any model is looked at;
the video job's contract (harness/jobs.py VideoJob) round-trips and refuses what a job file must not say."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import InputError
from harness.jobs import BackendRequest, FileRef, Job, VideoJob, VideoModel, read_job

SHA = "0" * 64


def _bench(argv: list[str], tmp_path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", "--target", "cpu", *argv, "--results-dir", str(tmp_path / "results"), "--no-build"])
    return code, err.getvalue()


def _one_line(err: str, name: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert name in lines[0], lines[0]
    return lines[0]


def _encode(path: Path, n: int, codec: str = "libx264", pix_fmt: str = "yuv420p") -> None:
    av = pytest.importorskip("av")
    out = av.open(str(path), "w")
    stream = out.add_stream(codec, rate=15)
    stream.width, stream.height, stream.pix_fmt = 64, 64, pix_fmt
    for i in range(n):
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), "rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def test_missing_file(tmp_path):
    code, err = _bench(["--source", str(tmp_path / "none.mp4")], tmp_path)
    assert code == 2
    assert _one_line(err, "none.mp4").endswith("no such file")


def test_folder_is_not_a_video(tmp_path):
    code, err = _bench(["--source", str(tmp_path)], tmp_path)
    assert code == 2 and "is not a file" in _one_line(err, str(tmp_path))


def test_file_that_cannot_be_opened(tmp_path):
    pytest.importorskip("av")
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all\n" * 20)
    code, err = _bench(["--source", str(bad)], tmp_path)
    assert code == 2 and "cannot be opened as a video" in _one_line(err, "notes.mp4")


def test_video_whose_frames_do_not_decode(tmp_path):
    """An MP4 whose track is intact but whose sample data is zeros: it opens and decodes no frame."""
    good = tmp_path / "good.mp4"
    _encode(good, 5)
    data = bytearray(good.read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = bytes(size - 8)
    bad = tmp_path / "zeros.mp4"
    bad.write_bytes(bytes(data))
    code, err = _bench(["--source", str(bad)], tmp_path)
    line = _one_line(err, "zeros.mp4")
    assert code == 2 and ("frame 0 cannot be decoded" in line or "decodes no frame" in line), line


def test_video_with_no_frame(tmp_path):
    """A container holding a video track and not one frame."""
    av = pytest.importorskip("av")
    empty = tmp_path / "empty.mp4"
    out = av.open(str(empty), "w")
    stream = out.add_stream("libx264", rate=15)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    out.start_encoding()
    out.close()
    code, err = _bench(["--source", str(empty)], tmp_path)
    line = _one_line(err, "empty.mp4")
    assert code == 2 and ("no video stream" in line or "decodes no frame" in line), line


def test_codec_without_a_decoder_is_unavailable(tmp_path):
    """An AVI whose FOURCC no FFmpeg decoder knows (MJPG renamed): exit 3, naming the file and the codec."""
    good = tmp_path / "m.avi"
    _encode(good, 3, codec="mjpeg", pix_fmt="yuvj420p")
    data = good.read_bytes()
    assert data.count(b"MJPG") >= 1
    bad = tmp_path / "unknown.avi"
    bad.write_bytes(data.replace(b"MJPG", b"QQ9Z"))
    code, err = _bench(["--source", str(bad)], tmp_path)
    line = _one_line(err, "unknown.avi")
    assert code == 3 and "has no decoder in the installed FFmpeg" in line, line


def test_source_refuses_options_it_does_not_take(tmp_path):
    code, err = _bench(["--source", str(tmp_path / "x.mp4"), "--condition", "jpeg:30"], tmp_path)
    assert code == 2 and "--condition" in _one_line(err, "--source")
    code, err = _bench(["--source", str(tmp_path / "x.mp4"), "--limit", "0"], tmp_path)
    assert code == 2 and "--limit" in _one_line(err, "--limit")


def _model(name: str, **kw) -> VideoModel:
    return VideoModel(file=FileRef(name, SHA), layout="NHWC", mean=(127.5,) * 3, scale=1 / 127.5, size=128, **kw)


def _job(**kw) -> VideoJob:
    base = dict(entry="video--blazeface+mobilefacenet--onnx-fp32", detector=_model("det.onnx"),
                embedder=_model("emb.onnx", align_points=("left_eye", "right_eye", "nose_tip", "mouth_centre"),
                                align_template="arcface-112"),
                backend=BackendRequest(runtime="onnxruntime"), source=FileRef("source.mp4", SHA))
    return VideoJob(**{**base, **kw})


def test_video_job_round_trips_and_dispatches(tmp_path):
    job = _job()
    job.write(tmp_path)
    again = read_job(tmp_path / "job.json")
    assert isinstance(again, VideoJob) and again == job
    # a model job without "kind" is still read as a model job
    d = json.loads((tmp_path / "job.json").read_text())
    assert d["kind"] == "video"


def test_video_job_refuses_bad_fields(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        _job(url="rtsp://camera/stream")
    with pytest.raises(ValueError, match="max_frames"):
        _job(max_frames=0)
    with pytest.raises(ValueError, match="align recipe"):
        _job(embedder=_model("emb.onnx"))
    d = json.loads(_job().to_json())
    d["detector"]["file"]["name"] = "../escape.onnx"
    (tmp_path / "job.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="not a valid video job"):
        read_job(tmp_path / "job.json")


def test_model_jobs_still_read_by_read_job(tmp_path):
    from device_helpers import job_folder

    job_folder(tmp_path / "in")
    assert isinstance(read_job(tmp_path / "in" / "job.json"), Job)


def test_device_without_pyav_says_unavailable(tmp_path, monkeypatch):
    """A board without PyAV: the video job fails as a test error whose `video.unavailable` says so (the host then
    exits 3), before any model is loaded; result.json passes the trust checks."""
    import sys

    from harness.device.video import run_video_job
    from harness.launchers.trust import read_result
    from harness.models.fetch import sha256_file

    refs = {}
    for name in ("det.onnx", "emb.onnx", "source.mp4"):
        (tmp_path / name).write_bytes(name.encode())
        refs[name] = FileRef(name, sha256_file(tmp_path / name))
    job = _job(detector=_model("det.onnx"), source=refs["source.mp4"])
    job = VideoJob(**{**job.__dict__, "detector": VideoModel(**{**job.detector.__dict__, "file": refs["det.onnx"]}),
                      "embedder": VideoModel(**{**job.embedder.__dict__, "file": refs["emb.onnx"]})})
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    result = run_video_job(job, tmp_path, tmp_path / "out")
    assert result.status == "test-error"
    assert "unavailable on this board: PyAV not installed" in result.video["unavailable"]
    assert "PyAV not installed" in result.reason
    assert read_result(tmp_path / "out", job, where="local worker").video == result.video
