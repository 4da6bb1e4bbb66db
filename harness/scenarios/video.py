"""`bench run --source FILE|URL`: a video through the whole pipeline on the target, frames per second end to end.

The host checks the source (it opens, has a video stream whose codec the installed FFmpeg decodes, and decodes a
first frame: otherwise one line naming it, exit 2, or exit 3 for a missing decoder), picks the detector
(BlazeFace) and the embedder (MobileFaceNet, or the verification model of `--model`) in one variant, and sends a
`VideoJob` (harness/jobs.py) with the two model files and the video to the device through a launcher (the local
child process here); the device decodes, detects, aligns and embeds every frame (harness/device/video.py). What
comes back passes the same trust checks as an inference job (harness/launchers/trust.py), is summarised per stage
with the single-stream statistics (harness/trackers/latency.py: count, mean, percentiles, a CI for the median) and
stamped VALID/INVALID by the same rules (harness/trackers/validity.py: --min-duration and --min-count, here
counted in frames; telemetry, backend, contention). Written to RUN/video.json; docs/camera.md has the schema.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness import specs
from harness.errors import BenchError, InfrastructureError, UnavailableError, UsageError
from harness.jobs import BackendRequest, FileRef, VideoJob, VideoModel

VIDEO_FILE = "video.json"
DETECTOR, EMBEDDER = "blazeface", "mobilefacenet"


def probe(source: str) -> dict[str, Any]:
    """Open `source` here and decode its first frame: {codec, width, height}. A file that is missing, cannot be
    opened, has no video stream or decodes no frame: InputError (exit 2); a codec without a decoder in the installed
    FFmpeg, or no PyAV: UnavailableError (exit 3). Each one line naming the source."""
    from harness.device.video import frames, open_video
    from harness.errors import InputError
    from harness.names import shown

    where = shown(source)
    if "://" not in source:
        p = Path(source)
        if not p.exists():
            raise InputError(f"{where}: no such file")
        if not p.is_file():
            raise InputError(f"{where}: is not a file")
    container, stream = open_video(where, source)
    try:
        first = next(frames(where, container, stream, 1), None)
        if first is None:
            raise InputError(f"{where}: decodes no frame")
        return {"codec": stream.codec_context.name, "width": first.width, "height": first.height}
    finally:
        container.close()


def _pick_models(models: tuple[str, ...]) -> tuple[specs.ModelSpec, specs.ModelSpec]:
    chosen = [specs.get_model(m) for m in models]
    det = next((m for m in chosen if m.task == "detection"), specs.get_model(DETECTOR))
    emb = next((m for m in chosen if m.task == "verification"), specs.get_model(EMBEDDER))
    if emb.align is None:
        raise UsageError(f"model {emb.id}: has no [align] recipe; the video source needs an aligned embedder")
    return det, emb


def _plan(target: specs.TargetProfile, variant: str, det: specs.ModelSpec, emb: specs.ModelSpec, cache: Path):
    """(backend, [(model, VariantStatus)]) for the first of the target's backends that runs `variant` here."""
    from harness.models.pack import variant_status
    from harness.runners import backend_availability

    if variant not in specs.VARIANTS:
        raise UsageError(f"unknown variant '{variant}'; valid: {', '.join(specs.VARIANTS)}")
    backends = [b for b in target.backends if variant in b.variants]
    if not backends:
        raise UsageError(f"target {target.id} runs no {variant} variant; it runs "
                         f"{', '.join(v for b in target.backends for v in b.variants)}")
    why = None
    for backend in backends:
        ok, why = backend_availability(backend)
        if ok:
            break
    else:
        raise UnavailableError(f"target {target.id}: {variant}: {why}")
    packs = []
    for m in (det, emb):
        vs = variant_status(cache, m, variant)
        if vs.status != "built":
            raise UnavailableError(f"model {m.id} {variant}: variant {vs.status}: {vs.reason} (bench models build)")
        packs.append((m, vs))
    return backend, packs


def run_video(source: str, *, target_id: str, models: tuple[str, ...], variant: str | None, cache: Path,
              results_root: Path, threads: int | None, min_duration_s: float, min_count: int,
              max_frames: int | None, timeout_s: float, log: Callable[[str], None],
              emulate: str | None = None, board_pyav: bool = True) -> Path:
    """Run the video source on the target; returns the run directory holding video.json. emulate ("arm64[:CPU]"):
    on the emulated board (harness/launchers/emulated.py) with PyAV from an overlay of aarch64 wheels
    (Arm64Board.ensure_extra; board_pyav=False leaves it out, as a board without PyAV); its timings are INVALID."""
    from harness.device.worker import cpu_executed
    from harness.models.fetch import sha256_file
    from harness.scenarios.entry import link

    target = specs.get_target(target_id)
    det, emb = _pick_models(models)
    seen = probe(source)  # bad input: one line before any model is looked at
    variant = variant or "onnx-fp32"
    backend, packs = _plan(target, variant, det, emb, cache)
    from harness.names import shown

    log(f"video: {shown(seen['codec'])} {seen['width']}x{seen['height']} from "
        f"{shown(Path(source).name if '://' not in source else source)}")

    stamp = dt.datetime.now(dt.timezone.utc)
    run_dir = Path(results_root) / f"video-{stamp.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    in_dir, out_dir = run_dir / "job", run_dir / "out"
    in_dir.mkdir(parents=True)
    refs = []
    for m, vs in packs:
        path = Path(vs.path)
        name = f"{m.id}-{path.name}"  # both packs name their file by the variant alone
        link(path, in_dir / name)
        refs.append(VideoModel(file=FileRef(name, vs.sha256), layout=(vs.info.get("input") or {}).get("layout"),
                               mean=tuple(m.input.mean), scale=float(m.input.scale), size=int(m.input.size[0]),
                               align_points=tuple(m.align.points) if m.align else (),
                               align_template=m.align.template if m.align else None,
                               score_threshold=float(m.output.get("score_threshold", 0.5))))
    source_ref = url = None
    if "://" in source:
        url = source
    else:
        name = "source" + "".join(Path(source).suffixes[-1:])[:16]
        link(Path(source), in_dir / name)
        source_ref = FileRef(name, sha256_file(Path(source)))
    request = BackendRequest(runtime=backend.runtime, provider=backend.provider, delegate=backend.delegate,
                             delegate_library=backend.delegate_library,
                             threads=backend.threads if threads is None else threads,
                             provider_options=dict(backend.provider_options))
    job = VideoJob(entry=f"video--{det.id}+{emb.id}--{variant}", detector=refs[0], embedder=refs[1],
                   backend=request, source=source_ref, url=url, max_frames=max_frames or 100_000,
                   telemetry=tuple(target.telemetry))
    launcher = _launcher(emulate, target, cache, timeout_s=timeout_s, log=log, board_pyav=board_pyav)
    log(f"video: {job.entry} on {target.id} ({launcher.where})")
    result = launcher.launch(job, in_dir, out_dir)
    doc = {"kind": "video", "created": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "target": target.id,
           "source": {"name": Path(source).name if url is None else url,
                      "sha256": source_ref.sha256 if source_ref else None},
           "entry": job.entry, "models": {"detector": det.id, "embedder": emb.id}, "variant": variant,
           "settings": {"min_duration_s": min_duration_s, "min_count": min_count, "max_frames": max_frames,
                        "threads": request.threads},
           "launcher": launcher.describe(), "status": "ok" if result.ok else "failed", "reason": result.reason,
           "environment": result.environment}
    if result.ok:
        doc.update(summarise(result, out_dir, where=launcher.where, min_duration_s=min_duration_s,
                             min_count=min_count, cpu=cpu_executed(request)))
        if emulate:
            from harness.launchers.emulated import emulation_reason

            reason = emulation_reason(launcher.board.emulation)
            doc["validity"] = {"status": "INVALID", "reasons": [reason, *doc["validity"]["reasons"]]}
    from harness.files import atomic_write_text

    atomic_write_text(run_dir / VIDEO_FILE, json.dumps(doc, indent=1, sort_keys=True, default=_jsonable) + "\n")
    if not result.ok:
        kind = InfrastructureError if result.status == "infrastructure-error" else BenchError
        if isinstance(result.video, dict) and result.video.get("unavailable"):
            kind = UnavailableError
        raise kind(f"{job.entry}: {result.reason} (run folder {run_dir})")
    return run_dir


def _launcher(emulate: str | None, target: specs.TargetProfile, cache: Path, *, timeout_s: float,
              log: Callable[[str], None], board_pyav: bool):
    """The local launcher, or the emulated board with PyAV's aarch64 wheels bound in (UnavailableError, exit 3,
    "unavailable on this board: PyAV not installed (...)" when they cannot be fetched)."""
    from harness.launchers.local import LocalLauncher

    if not emulate:
        return LocalLauncher(timeout_s=timeout_s)
    from harness.launchers.arm64_board import CAMERA_WHEELS
    from harness.launchers.emulated import make_launcher

    launcher = make_launcher(emulate, target, cache, timeout_s=timeout_s, log=log)
    if board_pyav:
        launcher.extra_site = launcher.board.ensure_extra("camera", CAMERA_WHEELS, "PyAV")
    return launcher


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return dict(value)


def summarise(result, out_dir: Path, *, where: str, min_duration_s: float, min_count: int,
              cpu: bool = True) -> dict[str, Any]:
    """Per-stage and end-to-end statistics, frames per second and the validity stamp from what the device sent
    (checked here: the chunks' stage rows and face counts, timings.npy; InfrastructureError naming the file)."""
    from harness.device.video import STAGES
    from harness.launchers import trust
    from harness.trackers.contention import clean_record
    from harness.trackers.latency import LatencyStats
    from harness.trackers.validity import assess

    totals = trust.read_timings(out_dir, result, where=where)
    ids, stage_rows, faces = [], [], []
    for path in trust.chunk_paths(out_dir, where=where):
        chunk = trust.read_chunk(path, where=where)
        if len(chunk.outputs) != 2 or chunk.outputs[0].shape != (len(chunk.sample_ids), len(STAGES)) \
                or chunk.outputs[1].shape != (len(chunk.sample_ids), 1) or chunk.outputs[1].dtype.kind not in "iu":
            raise InfrastructureError(f"{where}: {path.name}: not a video chunk (per frame {len(STAGES)} stage "
                                      f"times and a face count)")
        ids.extend(chunk.sample_ids)
        stage_rows.append(chunk.outputs[0].astype(np.float64))
        faces.append(chunk.outputs[1][:, 0])
    stages = np.concatenate(stage_rows) if stage_rows else np.zeros((0, len(STAGES)))
    n = len(totals)
    if ids != [f"frame-{i:06d}" for i in range(n)] or stages.shape[0] != n \
            or not (np.isfinite(stages).all() and (stages >= 0).all()) \
            or not np.allclose(stages.sum(axis=1), totals, rtol=1e-6, atol=1e-6):
        raise InfrastructureError(f"{where}: the per-frame stage times do not match timings.npy ({n} frames)")
    faces = np.concatenate(faces).astype(np.int64)
    if (faces < 0).any():
        raise InfrastructureError(f"{where}: a frame's face count is negative")
    stats = LatencyStats.from_ms(totals)
    contention = clean_record(result.contention)
    video = dict(result.video or {})  # from the device: strings escaped, numbers kept only when finite
    stream = {k: (trust.printable(v) if isinstance(v, str) else v if trust._finite(v) and v >= 0 else None)
              for k, v in ((k, video.get(k)) for k in ("codec", "width", "height", "average_rate", "bit_rate"))}
    return {
        "frames": n, "faces": int(faces.sum()), "frames_with_face": int((faces > 0).sum()),
        "stream": stream,
        "fps": n / (totals.sum() / 1e3),
        "end_to_end": stats.to_dict(),
        "stages": {s: LatencyStats.from_ms(stages[:, i]).to_dict() for i, s in enumerate(STAGES)},
        "init_ms": result.init_ms, "first_inference_ms": result.first_inference_ms,
        "backend": dict(result.backend or {}), "cpu_util_pct": result.cpu_util_pct,
        "telemetry": dict(result.telemetry or {}), "contention": contention, "memory": dict(result.memory or {}),
        "validity": assess(stats, min_duration_s=min_duration_s, min_count=min_count,
                           telemetry=dict(result.telemetry or {}), backend_check=dict(result.backend or {}),
                           contention=contention if isinstance(contention, dict) else None),
    }


def summary_lines(doc: dict) -> list[str]:
    """The console summary of a video run."""
    from harness.device.video import STAGES

    if doc.get("status") != "ok":
        return [f"{doc['entry']}: failed: {doc.get('reason')}"]
    v = doc["validity"]
    lines = [f"{doc['entry']} on {doc['target']}: {doc['frames']} frames ({doc['stream']['codec']} "
             f"{doc['stream']['width']}x{doc['stream']['height']}), {doc['faces']} faces, "
             f"{doc['fps']:.1f} frames/s end to end, {v['status']}"
             + (f" ({'; '.join(v['reasons'])})" if v["reasons"] else "")]
    for name, s in [*((k, doc["stages"][k]) for k in STAGES), ("end to end", doc["end_to_end"])]:
        ci = s["p50_ci_ms"]
        lines.append(f"  {name:<10} p50 {s['p50_ms']:8.2f} ms"
                     + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                     + f"  mean {s['mean_ms']:8.2f}  p90 {s['p90_ms']:8.2f}  max {s['max_ms']:8.2f}  (n={s['count']})")
    return lines
