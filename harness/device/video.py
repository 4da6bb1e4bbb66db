"""The device side of a video job (`bench run --source`): decode, detect, align and embed every frame, each stage
timed per frame. The body camera's own cost on the board (issue 20, docs/camera.md "The video source").

Like harness/device/worker.py it needs only numpy, psutil and one runtime, plus PyAV (FFmpeg's decoders; the
`camera` extra) to decode: no opencv. The detector's letterbox resize is FFmpeg's swscale (area averaging, as the
host's cv2.INTER_AREA), the chip is sampled by the numpy bilinear warp of harness/tasks/resample.py
(`_dlib_bilinear`: the same chip-to-image map as the host's cv2.warpAffine, without opencv's fixed-point rounding).

Per frame, in stream order (STAGES): decode (the next frame out of the decoder, converted to RGB), detect
(letterbox, normalise, BlazeFace, its decoding and weighted NMS: harness/tasks/blazeface.py), align (every face's
chip from its keypoints: harness/tasks/align.py) and embed (every chip through the embedder, the graph's batch at a
time). The per-frame end-to-end time (the four together) goes to timings.npy, so the host reads it as it reads a
single-stream measurement; the per-stage times and faces per frame go to outputs/chunk-*.npz (sample id
`frame-NNNNNN`), written atomically as they complete. Telemetry, the CPU share and contention cover the whole pass.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import BenchError, InputError, UnavailableError
from harness.jobs import TIMINGS_FILE, JobResult, VideoJob

STAGES = ("decode", "detect", "align", "embed")


def open_video(where: str, target: str):
    """(container, video stream) of a file or URL PyAV opens; InputError / UnavailableError naming `where` for a
    source that cannot be opened, has no video stream, or whose codec the installed FFmpeg cannot decode."""
    try:
        import av
    except ImportError:
        raise UnavailableError("unavailable on this board: PyAV not installed (pip install '.[camera]'): the "
                               "video source needs FFmpeg's decoders") from None
    try:
        container = av.open(target, mode="r", timeout=30.0)
    except av.error.FFmpegError as exc:
        raise InputError(f"{where}: cannot be opened as a video: {_why(exc)}") from None
    except OSError as exc:
        raise InputError(f"{where}: cannot be opened: {exc.strerror or exc}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{where}: has no video stream")
    stream = container.streams.video[0]
    name = stream.codec_context.name if stream.codec_context is not None else None
    try:
        av.codec.Codec(name or "", "r")
    except (av.codec.codec.UnknownCodecError, ValueError):
        container.close()
        raise UnavailableError(f"{where}: codec '{name or 'unknown'}' has no decoder in the installed FFmpeg "
                               f"library (PyAV {av.__version__})") from None
    stream.thread_type = "AUTO"
    return container, stream


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def frames(where: str, container, stream, limit: int):
    """Decoded frames of `stream`, at most `limit`; a decoding error ends the stream with InputError naming it."""
    import av

    n = 0
    try:
        for frame in container.decode(stream):
            yield frame
            n += 1
            if n >= limit:
                return
    except av.error.FFmpegError as exc:
        raise InputError(f"{where}: frame {n} cannot be decoded: {_why(exc)}") from None


def letterbox_frame(frame, size: int):
    """(size x size uint8 RGB letterboxed as harness.tasks.preprocess.letterbox, its Letterbox): FFmpeg's swscale
    resizes straight from the decoded frame with area averaging; the rest is black padding."""
    from harness.tasks.preprocess import Letterbox

    w, h = frame.width, frame.height
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = frame.reformat(width=nw, height=nh, format="rgb24", interpolation="AREA").to_ndarray()
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = small
    return out, Letterbox(scale_x=nw / w, scale_y=nh / h, pad_x=float(left), pad_y=float(top))


def run_video_job(job: VideoJob, job_dir: Path, out_dir: Path) -> JobResult:
    """Run `job` with the files in `job_dir`, writing under `out_dir`; returns (and writes) its JobResult."""
    from harness.device.worker import execute

    def unavailable(exc: BenchError, measured: dict[str, Any]) -> None:
        # no PyAV, or no decoder for the codec, on this device: the host says so (exit 3)
        if isinstance(exc, UnavailableError):
            measured["video"] = {**measured.get("video", {}), "unavailable": exc.message}

    return execute(job, Path(job_dir), Path(out_dir), _measure, on_error=unavailable)


def _measure(job: VideoJob, job_dir: Path, out_dir: Path, chunks, measured: dict[str, Any]) -> None:
    from harness.device.worker import _checked, _ms_since, _save_atomic, cpu_executed, normalise
    from harness.runners import make_runner
    from harness.specs import Backend
    from harness.tasks import blazeface
    from harness.tasks.align import AlignRecipe, chip_to_image, detector_points
    from harness.tasks.resample import _dlib_bilinear
    from harness.trackers.contention import ContentionWindow
    from harness.trackers.memory import CpuWindow, current_rss_mb, peak_rss_mb
    from harness.trackers.telemetry import TelemetryWindow

    det_path, emb_path = _checked(job_dir, job.detector.file), _checked(job_dir, job.embedder.file)
    if job.source is not None:
        where, target = job.source.name, str(_checked(job_dir, job.source))
    else:
        where = target = job.url
    container, stream = open_video(where, target)
    measured["video"] = video = {"codec": stream.codec_context.name, "width": stream.codec_context.width,
                                 "height": stream.codec_context.height,
                                 "average_rate": float(stream.average_rate) if stream.average_rate else None,
                                 "bit_rate": stream.codec_context.bit_rate or container.bit_rate or None,
                                 "stages": list(STAGES)}
    e = job.embedder
    recipe = AlignRecipe(points=e.align_points, template=e.align_template, size=e.size)
    b = job.backend
    backend = Backend(runtime=b.runtime, variants=(), provider=b.provider, delegate=b.delegate,
                      delegate_library=b.delegate_library, threads=b.threads, provider_options=dict(b.provider_options))
    rss0 = current_rss_mb()
    t0 = time.perf_counter_ns()
    detector = make_runner(backend, det_path, layout=job.detector.layout)
    embedder = make_runner(backend, emb_path, layout=e.layout)
    measured["init_ms"] = _ms_since(t0)
    load_delta_mb = current_rss_mb() - rss0
    measured["backend"] = detector.backend.to_dict()
    measured["output_names"] = tuple(embedder.io.output_names)
    det_names = tuple(detector.io.output_names)
    emb_batch = embedder.max_batch(8)

    # First inference of both models on black inputs (lazy allocation, kernel selection), before any frame is timed.
    t0 = time.perf_counter_ns()
    detector.run(np.zeros((1, job.detector.size, job.detector.size, 3), np.float32))
    embedder.run(np.zeros((1, e.size, e.size, 3), np.float32))
    measured["first_inference_ms"] = _ms_since(t0)

    clock = time.perf_counter_ns
    totals: list[float] = []
    faces_total = 0
    with TelemetryWindow(job.telemetry) as tele, CpuWindow() as cpu, \
            ContentionWindow(threads=b.threads, cpu_executed=cpu_executed(b)) as contention:
        stream_frames = frames(where, container, stream, job.max_frames)
        while True:
            t_a = clock()
            frame = next(stream_frames, None)
            if frame is None:
                break
            rgb = frame.to_ndarray(format="rgb24")
            t_b = clock()
            boxed, lb = letterbox_frame(frame, job.detector.size)
            x = normalise(boxed[None], job.detector.mean, job.detector.scale)
            outs = detector.run(x)
            dets = blazeface.decode(dict(zip(det_names, outs)), lb, score_threshold=job.detector.score_threshold,
                                    input_size=job.detector.size)
            t_c = clock()
            chips = [_dlib_bilinear(rgb, chip_to_image(recipe, detector_points(d.keypoints, recipe)), e.size)
                     for d in dets]
            t_d = clock()
            for start in range(0, len(chips), emb_batch):
                embedder.run(normalise(np.stack(chips[start:start + emb_batch]), e.mean, e.scale))
            t_e = clock()
            stage_ms = np.array([t_b - t_a, t_c - t_b, t_d - t_c, t_e - t_d], np.float64) / 1e6
            totals.append(float(stage_ms.sum()))
            faces_total += len(dets)
            chunks.add(f"frame-{len(totals) - 1:06d}", totals[-1], [stage_ms, np.array([len(dets)], np.int64)])
        contention.count = len(totals)
    container.close()
    chunks.flush()
    if not totals:
        raise InputError(f"{where}: decodes no frame")
    _save_atomic(out_dir / TIMINGS_FILE, lambda fh: np.save(fh, np.asarray(totals, np.float64)))
    video.update(frames=len(totals), faces=faces_total)
    measured.update(timings=TIMINGS_FILE, single_stream_batch=1, cpu_util_pct=cpu.cpu_util_pct,
                    telemetry=tele.to_dict(), contention=contention.record, windows=tele.stamps(),
                    memory={"rss_peak_mb": peak_rss_mb(), "load_delta_mb": load_delta_mb})
    detector.close()
    embedder.close()
