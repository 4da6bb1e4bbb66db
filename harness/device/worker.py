"""The device side of a job: load one model variant, feed it, time it, record raw outputs. Nothing else.

Imports only numpy, psutil, the runtime (lazily, through harness.runners) and harness modules that import only
those, so it runs in the lean device install (`pip install '.[device-litert]'` or `'.[device-onnx]'`) on a board
without pandas, scipy, matplotlib, opencv or rich (tests/unit/test_device_worker.py checks sys.modules).

Order: check the transferred files -> load (init_ms, load RSS delta; the backend proven active) -> first
inference -> accuracy pass over the job's samples, one face per call (a fixed-batch graph gets its batch), raw
outputs written in atomic chunks as they complete so a killed job resumes after the last chunk -> single-stream
latency with telemetry sampled in the background -> offline throughput -> result.json. Everything goes under
`out_dir`; the worker writes nowhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.errors import BenchError, InputError
from harness.jobs import (OUTPUTS_DIR, SEARCH_TASK, STATUS_INFRA_ERROR, STATUS_OK, STATUS_TEST_ERROR, TIMINGS_FILE,
                          BackendRequest, FileRef, Job, JobResult, atomic_write)


class TransferError(BenchError):
    """A file the job names is missing or not the file the host sent: the transfer failed, not the model."""


def _ms_since(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def _checked(job_dir: Path, ref: FileRef) -> Path:
    from harness.models.fetch import sha256_file

    path = job_dir / ref.name
    if not path.is_file():
        raise TransferError(f"{path}: missing (the host sends it with the job)")
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise TransferError(f"{path}: sha256 mismatch: expected {ref.sha256}, actual {actual}")
    return path


def normalise(raw: np.ndarray, mean: tuple[float, ...], scale: float) -> np.ndarray:
    """(x - mean) * scale in float32: harness.tasks.preprocess.normalize, restated here so the device needs no cv2."""
    return ((raw.astype(np.float32) - np.asarray(mean, dtype=np.float32)) * np.float32(scale)).astype(np.float32)


def _save_atomic(path: Path, save) -> None:
    """Exclusive, uniquely named temporary file + rename (harness.jobs.atomic_write): a symlink planted at a fixed
    temporary name is never followed (issue 17)."""
    atomic_write(path, save)


def _own_folder(path: Path) -> Path:
    """`path` as a real folder of the worker's (created if missing); a symlink there is refused, never followed, so
    nothing is written outside --out."""
    if path.is_symlink():
        raise InputError(f"{path}: is a symbolic link; the worker writes only into real folders under --out")
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise InputError(f"{path}: is not a folder")
    return path


class _Chunks:
    """Raw outputs of the accuracy pass, flushed every `size` samples as outputs/chunk-<n>.npz (atomic rename)."""

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = _own_folder(folder), size
        self.names: list[str] = sorted(p.name for p in folder.glob("chunk-*.npz"))
        self._ids: list[str] = []
        self._ms: list[float] = []
        self._outs: list[list[np.ndarray]] = []

    def add(self, sample_id: str, infer_ms: float, outs: list[np.ndarray]) -> None:
        self._ids.append(sample_id)
        self._ms.append(infer_ms)
        self._outs.append(outs)
        if len(self._ids) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self._ids:
            return
        name = f"chunk-{len(self.names):05d}.npz"
        arrays = {f"out{k}": np.stack([o[k] for o in self._outs]) for k in range(len(self._outs[0]))}
        _save_atomic(self.folder / name, lambda fh: np.savez(fh, sample_ids=np.array(self._ids),
                                                             infer_ms=np.array(self._ms, np.float64), **arrays))
        self.names.append(name)
        self._ids, self._ms, self._outs = [], [], []


def cpu_executed(b: BackendRequest) -> bool:
    """Whether the model runs on this machine's CPU (the runtime registry's `cpu` list: onnxruntime's CPU provider,
    LiteRT on its builtin kernels or XNNPACK). Other providers and delegates (CUDA, TensorRT, Edge TPU) run it on an
    accelerator."""
    from harness import runtimes

    return runtimes.cpu_executed(b)


def run_job(job: Job, job_dir: Path, out_dir: Path) -> JobResult:
    """Run `job` with the files in `job_dir`, writing under `out_dir`; returns (and writes) its JobResult."""
    if job.task == SEARCH_TASK:
        return execute(job, Path(job_dir), Path(out_dir), _measure_search, on_error=_search_refused)
    return execute(job, Path(job_dir), Path(out_dir), _measure)


def _search_refused(exc: BenchError, measured: dict[str, Any]) -> None:
    """A search job refused because a gallery size would not fit in the board's memory says so in its result
    (`search.refused = "memory"`), so the host can tell a setting this board cannot take (exit 2) from a failure."""
    from harness.errors import GalleryTooLarge

    if isinstance(exc, GalleryTooLarge):
        measured["search"] = {"refused": "memory"}


def execute(job: Any, job_dir: Path, out_dir: Path, measure: Callable[..., None], *,
            on_error: Callable[[BenchError, dict[str, Any]], None] | None = None) -> JobResult:
    """The one shell around every job kind: `measure(job, job_dir, out_dir, chunks, measured)` fills `measured`
    (JobResult fields); a TransferError is an infrastructure error, any other failure the job's own (test-error),
    `on_error(exc, measured)` may record more about a BenchError. Chunks are flushed whatever happens, and the
    JobResult (with this device's fingerprint and the wall time) is written to out_dir and returned."""
    out_dir = _own_folder(out_dir)
    t_start = time.perf_counter()
    measured: dict[str, Any] = {}
    chunks = _Chunks(out_dir / OUTPUTS_DIR, job.chunk_size)
    try:
        measure(job, job_dir, out_dir, chunks, measured)
        status, reason = STATUS_OK, None
    except TransferError as exc:
        status, reason = STATUS_INFRA_ERROR, exc.message
    except BenchError as exc:
        status, reason = STATUS_TEST_ERROR, exc.message
        if on_error is not None:
            on_error(exc, measured)
    except Exception as exc:  # noqa: BLE001 - a runtime's own exception types; the job fails, the worker reports
        status, reason = STATUS_TEST_ERROR, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        chunks.flush()
    from harness.environment import fingerprint

    result = JobResult(entry=job.entry, status=status, reason=reason, chunks=tuple(chunks.names),
                       environment=fingerprint(), wall_s=round(time.perf_counter() - t_start, 3), **measured)
    result.write(out_dir)
    return result


def _measure(job: Job, job_dir: Path, out_dir: Path, chunks: _Chunks, measured: dict[str, Any]) -> None:
    from harness.runners import make_runner
    from harness.specs import Backend
    from harness.trackers.contention import ContentionWindow
    from harness.trackers.latency import measure_loop
    from harness.trackers.memory import CpuWindow, current_rss_mb, peak_rss_mb
    from harness.trackers.fan import fan_state
    from harness.trackers.telemetry import TelemetryWindow

    from harness.device import steady

    model_path = _checked(job_dir, job.model)
    # Between entries, before anything of this one runs: the cool-down (harness/device/steady.py).
    measured["steady_state"] = state = {"settings": dataclasses.asdict(job.steady_state),
                                        "cooldown": steady.cool_down(job.steady_state)}
    # The fan as the entry starts (after the cool-down) and after its timed window (harness/trackers/fan.py).
    state["fan"] = {"start": fan_state()}
    raw = np.load(_checked(job_dir, job.inputs.file), mmap_mode="r")
    rows = sorted({r for _, r in job.samples} | set(job.pool_rows))
    if rows and rows[-1] >= len(raw):
        raise TransferError(f"{job_dir / job.inputs.file.name}: has {len(raw)} rows, the job names row {rows[-1]}")
    pool = normalise(raw[list(job.pool_rows)], job.inputs.mean, job.inputs.scale)

    b = job.backend
    backend = Backend(runtime=b.runtime, variants=(), provider=b.provider, delegate=b.delegate,
                      delegate_library=b.delegate_library, threads=b.threads,
                      provider_options=dict(b.provider_options))
    # The prepare step: a runtime that keeps a board-side artefact (a TensorRT engine) finds or makes its place.
    from harness import runtimes

    backend, artefact = runtimes.module(b.runtime).prepare(backend, job.model.sha256)
    rss0 = current_rss_mb()
    t0 = time.perf_counter_ns()
    runner = make_runner(backend, model_path, layout=job.layout)
    measured["init_ms"] = _ms_since(t0)
    if artefact is not None and not artefact["hit"]:
        # The first session built the engine into the cache; a second one loads it: init is the load alone.
        runner.close()
        first_ms = measured["init_ms"]
        t0 = time.perf_counter_ns()
        runner = make_runner(backend, model_path, layout=job.layout)
        measured["init_ms"] = _ms_since(t0)
        artefact["build_ms"] = max(first_ms - measured["init_ms"], 0.0)
    load_delta_mb = current_rss_mb() - rss0
    measured["backend"] = runner.backend.to_dict()
    if artefact is not None:
        from harness.device.artefacts import engine_files

        artefact["files_after"] = engine_files(Path(artefact["path"]))
        measured["backend"]["artefact"] = artefact
    measured["output_names"] = tuple(runner.io.output_names)

    prepared, n_real = runner.prepare(pool[:1])
    t0 = time.perf_counter_ns()
    runner.infer(prepared)
    measured["first_inference_ms"] = _ms_since(t0)

    # Accuracy pass, one face per call (a fixed-batch graph gets its batch): per-sample infer_ms then measures that
    # face, so processing-time differences between groups (ISO/IEC 19795-10) are not averaged away by batching.
    batch = runner.max_batch(1)
    samples = list(job.samples)
    for start in range(0, len(samples), batch):
        part = samples[start:start + batch]
        x = normalise(raw[[r for _, r in part]], job.inputs.mean, job.inputs.scale)
        t0 = time.perf_counter_ns()
        outs = runner.run(x)
        infer_ms = _ms_since(t0) / len(part)
        for j, (sid, _) in enumerate(part):
            chunks.add(sid, infer_ms, [o[j] for o in outs])
    chunks.flush()

    # Single-stream latency on one real input, telemetry sampled meanwhile, and what CPU the process got. Before the
    # window the probes read the idle board (idle_s), then the model runs untimed (soak_s): harness/device/steady.py.
    lat = job.latency
    st = job.steady_state
    before = (functools.partial(steady.soak, lambda: runner.infer(prepared), st.soak_s)
              if st.idle_s > 0 or st.soak_s > 0 else None)
    # one `with` over three managers without parentheses: the device side stays Python 3.8 (JetPack 5)
    with TelemetryWindow(job.telemetry, idle_s=st.idle_s, before_window=before) as tele, CpuWindow() as cpu, \
            ContentionWindow(threads=b.threads, cpu_executed=cpu_executed(b)) as contention:
        timings = measure_loop(lambda: runner.infer(prepared), warmup=lat.warmup, min_duration_s=lat.min_duration_s,
                               min_count=lat.min_count, max_duration_s=lat.max_duration_s)
        contention.count = int(len(timings))
    state["fan"]["end"] = fan_state()
    _save_atomic(out_dir / TIMINGS_FILE, lambda fh: np.save(fh, timings))
    measured.update(timings=TIMINGS_FILE, single_stream_batch=int(prepared.shape[0]), real_faces_per_query=n_real,
                    cpu_util_pct=cpu.cpu_util_pct, telemetry=tele.to_dict(), contention=contention.record,
                    energy_mj_per_inference=tele.energy_mj_per_inference(len(timings)), windows=tele.stamps())
    if tele.before:
        soaked = tele.before.get("soak") or {}
        state["idle"] = {"done": st.idle_s > 0, "s": tele.before["idle_s"], "temp_c": soaked.get("temp_before_c"),
                         "power_mw": {name: r["summary"]["power"].get("idle_mw") for name, r in tele.to_dict().items()
                                      if "power" in r["summary"]}}
        state["soak"] = soaked

    # Offline throughput: the largest batch the graph allows (fixed-batch graphs: their batch).
    off_batch = runner.max_batch(job.offline.batch)
    reps = int(np.ceil(off_batch / len(pool)))
    big, n_big = runner.prepare(np.concatenate([pool] * reps)[:off_batch])
    off = measure_loop(lambda: runner.infer(big), warmup=2, min_duration_s=job.offline.min_duration_s,
                       min_count=job.offline.min_count, max_duration_s=lat.max_duration_s)
    measured["offline"] = {"throughput_ips": float(n_big * len(off) / (off.sum() / 1e3)), "batch": int(n_big),
                           "threads": b.threads or "runtime default", "count": int(len(off)),
                           "duration_s": float(off.sum() / 1e3)}
    measured["memory"] = {"rss_peak_mb": peak_rss_mb(), "load_delta_mb": load_delta_mb}
    runner.close()


def _measure_search(job: Job, job_dir: Path, out_dir: Path, chunks: _Chunks, measured: dict[str, Any]) -> None:
    """A search job (harness/device/search.py): no model, no runtime; the same chunks, timings and windows."""
    import contextlib

    from harness.device import search
    from harness.trackers.contention import ContentionWindow
    from harness.trackers.latency import measure_loop
    from harness.trackers.memory import CpuWindow, peak_rss_mb
    from harness.trackers.telemetry import TelemetryWindow

    gallery, probes = _checked(job_dir, job.model), _checked(job_dir, job.inputs.file)
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def windows():
        with TelemetryWindow(job.telemetry) as tele, CpuWindow() as cpu, \
                ContentionWindow(threads=job.backend.threads, cpu_executed=True) as contention:
            yield lambda n: setattr(contention, "count", int(n)) or seen.update(n=int(n))
        seen.update(tele=tele, cpu=cpu, contention=contention)

    timings = search.measure(job, gallery, probes, chunks.add, measured, windows, measure_loop)
    chunks.flush()
    _save_atomic(out_dir / TIMINGS_FILE, lambda fh: np.save(fh, timings))
    tele = seen["tele"]
    measured.update(timings=TIMINGS_FILE, cpu_util_pct=seen["cpu"].cpu_util_pct, telemetry=tele.to_dict(),
                    contention=seen["contention"].record,
                    energy_mj_per_inference=tele.energy_mj_per_inference(len(timings)), windows=tele.stamps(),
                    memory={"rss_peak_mb": peak_rss_mb()})
