"""The typed, versioned contract between the host and a device: `Job` in, `JobResult` out.

Measure on the device, score on the host (docs/architecture.md, "The device contract"). The host plans, acquires
and packs the model inputs; a device receives one model file, one input array and a `Job`, and sends back raw
outputs, timings, telemetry and its own environment fingerprint in a `JobResult`. Decoding, scoring and reports
never run on the device.

Both documents are frozen dataclasses serialised to JSON with a `schema_version`; a reader that meets another
version refuses it with one line naming the file, never guesses. The shape follows optimum-benchmark's
`Launcher.launch(worker, args) -> report` (a config object in, a report object out), and the result status follows
LAVA's split of failures: a *test* error (the model cannot load, the backend asked for is not active) is an outcome
of the benchmark, an *infrastructure* error (a crashed or vanished worker, a corrupted transfer) says nothing about
the model and may be retried.

This module imports only the standard library and harness.errors, so it runs on a device.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.errors import InputError

SCHEMA_VERSION = 1
JOB_FILE = "job.json"
RESULT_FILE = "result.json"
OUTPUTS_DIR = "outputs"        # raw-output chunks, <OUTPUTS_DIR>/chunk-<n>.npz, written atomically as they complete
TIMINGS_FILE = "timings.npy"   # single-stream latencies in ms, float64, one per measured call

STATUS_OK = "ok"
STATUS_TEST_ERROR = "test-error"
STATUS_INFRA_ERROR = "infrastructure-error"
STATUSES = (STATUS_OK, STATUS_TEST_ERROR, STATUS_INFRA_ERROR)


@dataclass(frozen=True)
class FileRef:
    """A file that travels with the job, named relative to the job's folder, with its sha256 (checked on arrival)."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"file name must be a plain name inside the job folder, got {self.name!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")


@dataclass(frozen=True)
class InputArray:
    """The packed model inputs: a uint8 NHWC .npy whose rows are faces (the host's acquisition arrays for one
    resize kind), normalised on the device as (x - mean) * scale in float32 (harness.tasks.preprocess.normalize)."""

    file: FileRef
    mean: tuple[float, ...]
    scale: float


@dataclass(frozen=True)
class BackendRequest:
    """What the target profile asks for; the device proves it is active (JobResult.backend) or fails the job."""

    runtime: str
    provider: str | None = None
    delegate: str | None = None
    delegate_library: str | None = None
    threads: int = 0
    provider_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LatencySettings:
    warmup: int = 10
    min_duration_s: float = 1.0
    min_count: int = 100
    max_duration_s: float = 60.0


@dataclass(frozen=True)
class OfflineSettings:
    batch: int = 32
    min_duration_s: float = 1.0
    min_count: int = 10


MAX_WAIT_S = 3600.0        # the longest idle, soak or cool-down a job may ask for (a bound on untrusted input)
MAX_WITHIN_C = 50.0        # the widest cool-down band, degrees C above the idle temperature
TEMP_RANGE_C = (-50.0, 150.0)  # a plausible SoC temperature; anything else is not a reading


def _seconds(value: Any) -> bool:
    return _number(value) and 0 <= value <= MAX_WAIT_S


def _number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SteadyState:
    """What the device does around the timed window to measure a steady board (issue 21), all in seconds:

    - `cooldown_s` before the model loads (between entries): wait that long; with `cooldown_within_c`, wait only until
      the SoC temperature is within that many degrees C of `idle_temp_c` (the host passes the run's idle temperature,
      read before its first entry ran), `cooldown_s` being the longest wait;
    - `idle_s` before the timed window, nothing running: the probes' idle power and temperature;
    - `soak_s` after that: the model runs untimed, so the timed window starts on a warm board (thermal soak).

    The job file is input to the board, so every field is bounded and numeric (MAX_WAIT_S, MAX_WITHIN_C)."""

    idle_s: float = 0.0
    soak_s: float = 0.0
    cooldown_s: float = 0.0
    cooldown_within_c: float | None = None
    idle_temp_c: float | None = None

    def __post_init__(self) -> None:
        for name in ("idle_s", "soak_s", "cooldown_s"):
            if not _seconds(getattr(self, name)):
                raise ValueError(f"steady_state.{name} must be a number of seconds in [0, {MAX_WAIT_S:g}], got "
                                 f"{getattr(self, name)!r}")
        w = self.cooldown_within_c
        if w is not None and not (_number(w) and 0 < w <= MAX_WITHIN_C):
            raise ValueError(f"steady_state.cooldown_within_c must be in (0, {MAX_WITHIN_C:g}] degrees C, got {w!r}")
        t = self.idle_temp_c
        if t is not None and not (_number(t) and TEMP_RANGE_C[0] <= t <= TEMP_RANGE_C[1]):
            raise ValueError(f"steady_state.idle_temp_c must be a temperature in [{TEMP_RANGE_C[0]:g}, "
                             f"{TEMP_RANGE_C[1]:g}] C, got {t!r}")

    @classmethod
    def from_dict(cls, d: Any) -> "SteadyState":
        if not isinstance(d, dict):
            raise ValueError("steady_state is not an object")
        return cls(**d)


SEARCH_TASK = "search"     # the 1:N watchlist search as a device workload (issue 18; docs/architecture.md)
MAX_SEARCH_K = 1000        # the most candidates a search job may ask the board to return per probe
MAX_GALLERY = 10_000_000   # the largest gallery a search job may name (`--search-sizes`; a bound on untrusted input)
MAX_CHECK_PROBES = 64      # the most probes a search job may ask to have searched once per size for the host's check
SEARCH_PRECISIONS = ("fp32", "fp16", "int8")  # storage precisions of gallery templates (harness/device/search.py)
MAX_SEED = 2 ** 63 - 1


def _count_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


@dataclass(frozen=True)
class SearchSpec:
    """What a job of task "search" asks the board to do (issue 18, docs/metrics.md "Identification").

    For such a job the job's `model` file is the watchlist gallery: a float32 .npy matrix, one template per row (the
    watchlist's templates, then any distractor faces), and its `inputs` file the probe templates (float32, same
    width); `samples` are the probes of the accuracy pass (id, row), `pool_rows` the probes the timed loops cycle
    through. The board L2-normalises every template and stores the gallery in `precision` (fp32, fp16, or int8 with
    a symmetric scale per template; harness/device/search.py), and search(probe) is the dot products of the probe
    with the first `size` stored rows followed by their top `k` (score descending, gallery position ascending: NIST
    FRVT 1:N candidate lists, NISTIR 8271 sec. 3). A gallery of `size` is the watchlist's first rows, then seeded
    synthetic rows drawn on the board from `seed` (harness.device.search.synthetic_blocks) up to `size`. The
    accuracy pass searches the stored watchlist; the timed loops run once per `size` in `sizes` (increasing) with the
    job's latency settings, and the probes at `check_rows` are searched once per size for the host's top-k check.
    Every field is bounded: the job file is input to the board."""

    k: int = 10
    sizes: tuple[int, ...] = ()
    precision: str = "fp32"
    seed: int = 0
    check_rows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not _count_in(self.k, 1, MAX_SEARCH_K):
            raise ValueError(f"search.k must be an integer in [1, {MAX_SEARCH_K}], got {self.k!r}")
        sizes = tuple(self.sizes)
        if not sizes or not all(_count_in(s, 1, MAX_GALLERY) for s in sizes):
            raise ValueError(f"search.sizes must be gallery sizes in [1, {MAX_GALLERY}], got {list(sizes)!r}")
        if list(sizes) != sorted(set(sizes)):
            raise ValueError(f"search.sizes must be increasing, got {list(sizes)!r}")
        if sizes[0] < self.k:
            raise ValueError(f"search.sizes: the smallest gallery ({sizes[0]}) holds fewer than k={self.k} templates")
        if self.precision not in SEARCH_PRECISIONS:
            raise ValueError(f"search.precision must be one of {', '.join(SEARCH_PRECISIONS)}, got {self.precision!r}")
        if not _count_in(self.seed, 0, MAX_SEED):
            raise ValueError(f"search.seed must be an integer in [0, 2^63), got {self.seed!r}")
        rows = tuple(self.check_rows)
        if len(rows) > MAX_CHECK_PROBES or not all(_count_in(r, 0, MAX_GALLERY) for r in rows) \
                or len(set(rows)) != len(rows):
            raise ValueError(f"search.check_rows must be at most {MAX_CHECK_PROBES} distinct probe rows, "
                             f"got {list(rows)[:MAX_CHECK_PROBES + 1]!r}")

    @classmethod
    def from_dict(cls, d: Any) -> "SearchSpec":
        if not isinstance(d, dict) or set(d) - {"k", "sizes", "precision", "seed", "check_rows"}:
            raise ValueError("search is not an object of k, sizes, precision, seed and check_rows")
        for name in ("sizes", "check_rows"):
            if not isinstance(d.get(name, []), list) or "sizes" not in d:
                raise ValueError(f"search.{name} is not a list")
        return cls(k=d.get("k"), sizes=tuple(d["sizes"]), precision=d.get("precision", "fp32"),
                   seed=d.get("seed", 0), check_rows=tuple(d.get("check_rows", [])))


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_environment(job: "Job") -> dict[str, str]:
    """The environment variables that bound the BLAS threads of a search job's worker: {} unless the job is a search
    with a thread count (`backend.threads` > 0, from `--threads`). numpy's BLAS (OpenBLAS, or MKL/OpenMP builds)
    reads them once, when it is loaded, so the launcher sets them in the worker's environment before the worker
    starts (OpenBLAS README "Setting the number of threads using environment variables"; threadpoolctl's
    documentation gives the same three). Without them OpenBLAS splits one matrix-vector product over every core."""
    n = job.backend.threads
    if job.task != SEARCH_TASK or not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return {}
    return {name: str(n) for name in BLAS_THREAD_VARIABLES}


@dataclass(frozen=True)
class Job:
    """One model variant on one backend: what to load, what to feed, what to measure.

    `samples` are (sample_id, row) pairs still to run, in order (resume: the host sends only what is not done);
    `row` indexes the input array. `pool_rows` are the rows that can be fed at all, which the latency and offline
    scenarios draw their inputs from (so an entry whose accuracy pass is complete can still be timed).
    """

    entry: str
    task: str
    model: FileRef
    layout: str | None
    inputs: InputArray
    backend: BackendRequest
    samples: tuple[tuple[str, int], ...]
    pool_rows: tuple[int, ...]
    latency: LatencySettings = LatencySettings()
    offline: OfflineSettings = OfflineSettings()
    telemetry: tuple[str, ...] = ("psutil",)
    chunk_size: int = 32  # samples per raw-output chunk: the most a killed job loses
    steady_state: SteadyState = SteadyState()
    search: SearchSpec | None = None  # task "search" only: the 1:N search workload (SearchSpec)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema version {self.schema_version} is not supported (this harness reads "
                             f"{SCHEMA_VERSION})")
        if (self.task == SEARCH_TASK) != (self.search is not None):
            raise ValueError(f"a job of task {SEARCH_TASK!r} needs a search spec, and only such a job has one")
        if not self.pool_rows:
            raise ValueError(f"{self.entry}: no input row can be fed to the model (every image failed to acquire)")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if self.layout not in (None, "NHWC", "NCHW"):
            raise ValueError(f"layout must be NHWC, NCHW or null, got {self.layout!r}")
        # A negative row would index from the end of the input array: another image, silently (issue 17).
        for sid, row in self.samples:
            if not isinstance(sid, str) or not sid:
                raise ValueError(f"sample id {sid!r} is not a non-empty string")
            if not _row(row):
                raise ValueError(f"sample {sid!r}: row {row!r} is not an integer >= 0")
        if len({sid for sid, _ in self.samples}) != len(self.samples):
            raise ValueError("a sample id is named twice")
        bad = next((r for r in self.pool_rows if not _row(r)), None)
        if bad is not None:
            raise ValueError(f"pool row {bad!r} is not an integer >= 0")

    def to_json(self) -> str:
        return _dump(self)

    @classmethod
    def from_json(cls, text: str, where: str = JOB_FILE) -> "Job":
        d = _load(text, where)
        try:
            return cls(entry=d["entry"], task=d["task"], model=FileRef(**d["model"]), layout=d["layout"],
                       inputs=InputArray(file=FileRef(**d["inputs"]["file"]), mean=tuple(d["inputs"]["mean"]),
                                         scale=float(d["inputs"]["scale"])),
                       backend=BackendRequest(**d["backend"]),
                       samples=tuple((s, r) for s, r in d["samples"]),
                       pool_rows=tuple(d["pool_rows"]),
                       latency=LatencySettings(**d["latency"]), offline=OfflineSettings(**d["offline"]),
                       telemetry=tuple(d["telemetry"]), chunk_size=int(d["chunk_size"]),
                       steady_state=SteadyState.from_dict(d.get("steady_state", {})),
                       search=SearchSpec.from_dict(d["search"]) if d.get("search") is not None else None,
                       schema_version=d["schema_version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: not a valid job: {_why(exc)}") from None

    def write(self, folder: Path) -> Path:
        path = Path(folder) / JOB_FILE
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: Path) -> "Job":
        return cls.from_json(_read(path), str(path))


@dataclass(frozen=True)
class VideoModel:
    """One model of the video pipeline: its file, input normalisation and layout; for the embedder, the chip."""

    file: FileRef
    layout: str | None
    mean: tuple[float, ...]
    scale: float
    size: int                              # input side in px (square): 128 for BlazeFace, 112 for the chip
    align_points: tuple[str, ...] = ()     # the embedder's AlignRecipe (harness/tasks/align.py); empty: detector
    align_template: str | None = None
    score_threshold: float = 0.5           # the detector's (manifest [output].score_threshold)


@dataclass(frozen=True)
class VideoJob:
    """A video source through the whole pipeline on the device (`bench run --source`, docs/camera.md): decode each
    frame (PyAV), detect (BlazeFace), align every face, embed it; each stage timed per frame. `source` is a file
    sent with the job (FileRef) or a stream URL the device opens itself (`url`). `max_frames` bounds the work."""

    entry: str
    detector: VideoModel
    embedder: VideoModel
    backend: BackendRequest
    source: FileRef | None = None
    url: str | None = None
    max_frames: int = 100_000
    telemetry: tuple[str, ...] = ("psutil",)
    chunk_size: int = 64  # frames per raw-record chunk
    kind: str = "video"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema version {self.schema_version} is not supported (this harness reads "
                             f"{SCHEMA_VERSION})")
        if (self.source is None) == (self.url is None):
            raise ValueError("a video job names exactly one of source (a file) and url")
        if self.url is not None and (not isinstance(self.url, str) or "://" not in self.url):
            raise ValueError("url must be a stream URL (scheme://...)")
        if not (isinstance(self.max_frames, int) and self.max_frames >= 1):
            raise ValueError("max_frames must be an integer >= 1")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        for m in (self.detector, self.embedder):
            if m.layout not in (None, "NHWC", "NCHW"):
                raise ValueError(f"layout must be NHWC, NCHW or null, got {m.layout!r}")
            if not (isinstance(m.size, int) and 2 <= m.size <= 4096):
                raise ValueError(f"model input size {m.size!r} is not an integer in [2, 4096]")
        if not self.embedder.align_points or not self.embedder.align_template:
            raise ValueError("the embedder needs its align recipe (points and template)")

    @property
    def task(self) -> str:
        return "video"

    def to_json(self) -> str:
        return _dump(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = JOB_FILE) -> "VideoJob":
        def model(m: dict) -> VideoModel:
            return VideoModel(file=FileRef(**m["file"]), layout=m["layout"], mean=tuple(m["mean"]),
                              scale=float(m["scale"]), size=m["size"], align_points=tuple(m["align_points"]),
                              align_template=m["align_template"], score_threshold=float(m["score_threshold"]))
        try:
            return cls(entry=d["entry"], detector=model(d["detector"]), embedder=model(d["embedder"]),
                       backend=BackendRequest(**d["backend"]),
                       source=FileRef(**d["source"]) if d.get("source") is not None else None, url=d.get("url"),
                       max_frames=d["max_frames"], telemetry=tuple(d["telemetry"]), chunk_size=int(d["chunk_size"]),
                       kind=d["kind"], schema_version=d["schema_version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: not a valid video job: {_why(exc)}") from None

    def write(self, folder: Path) -> Path:
        path = Path(folder) / JOB_FILE
        atomic_write_text(path, self.to_json())
        return path


def read_job(path: Path) -> "Job | VideoJob":
    """A job file of either kind: a video job says `"kind": "video"`; everything else is a model job."""
    where = str(path)
    d = _load(_read(path), where)
    if d.get("kind") == "video":
        return VideoJob.from_dict(d, where)
    return Job.from_json(json.dumps(d), where)


@dataclass(frozen=True)
class JobResult:
    """What a device sends back. Everything is raw or directly measured; the host derives statistics and scores.

    On status "ok" every measurement is present. On an error `reason` is one line; fields measured before the
    failure are kept (e.g. chunks written before a crash still reach the host, which resumes after them).
    """

    entry: str
    status: str
    reason: str | None = None
    backend: Mapping[str, Any] | None = None          # BackendInfo.to_dict(): requested vs active, proven on load
    output_names: tuple[str, ...] = ()
    chunks: tuple[str, ...] = ()                       # files under OUTPUTS_DIR, in the order they were written
    init_ms: float | None = None
    first_inference_ms: float | None = None
    timings: str | None = None                         # TIMINGS_FILE when single-stream latency was measured
    single_stream_batch: int | None = None
    real_faces_per_query: int | None = None
    offline: Mapping[str, Any] | None = None           # throughput_ips, batch, threads, count, duration_s
    memory: Mapping[str, Any] | None = None            # rss_peak_mb, load_delta_mb
    cpu_util_pct: float | None = None
    contention: Mapping[str, Any] | None = None        # the timed window's CPU share, switches, steal, load
    telemetry: Mapping[str, Any] | None = None         # per-probe summaries (trackers.telemetry)
    energy_mj_per_inference: float | None = None
    steady_state: Mapping[str, Any] | None = None      # cool-down, idle and soak as done (harness/device/steady.py)
    windows: Mapping[str, Any] | None = None           # idle/timed window [start, end] on the device's time.time()
    search: Mapping[str, Any] | None = None            # a search job's k, dim, n_gallery, sizes and timings per size
    environment: Mapping[str, Any] | None = None       # the device's fingerprint (harness.environment)
    video: Mapping[str, Any] | None = None             # a video job: the stream decoded, frames, faces, stages
    exit_code: int | None = None                       # the worker's exit code (negative: killed by that signal)
    wall_s: float | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema version {self.schema_version} is not supported (this harness reads "
                             f"{SCHEMA_VERSION})")
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status != STATUS_OK and not self.reason:
            raise ValueError(f"status {self.status} needs a reason")

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def replace(self, **changes: Any) -> "JobResult":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return _dump(self)

    @classmethod
    def from_json(cls, text: str, where: str = RESULT_FILE) -> "JobResult":
        return cls.from_dict(_load(text, where), where)

    @classmethod
    def from_dict(cls, d: Any, where: str = RESULT_FILE) -> "JobResult":
        """A parsed result.json; InputError naming `where` for anything that is not a valid result (the host reads
        a device's result through harness/launchers/trust.py, which checks its claims too)."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a JSON object")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise InputError(f"{where}: schema version {d.get('schema_version')!r} is not supported by this harness "
                             f"(reads {SCHEMA_VERSION}); use the same harness version on the host and the device")
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"{where}: not a valid job result: unknown field(s) {', '.join(unknown)}")
        try:
            for name in ("output_names", "chunks"):
                value = d.get(name, ())
                if not isinstance(value, (list, tuple)):
                    raise ValueError(f"{name} is not a list")
                d[name] = tuple(value)
            if not isinstance(d.get("status"), str) or not isinstance(d.get("entry"), str):
                raise ValueError("entry and status must be strings")
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: not a valid job result: {_why(exc)}") from None

    def write(self, folder: Path) -> Path:
        path = Path(folder) / RESULT_FILE
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: Path) -> "JobResult":
        return cls.from_json(_read(path), str(path))


def atomic_write_text(path: Path, text: str) -> None:
    """Write-then-rename, so a reader (or a killed writer) never sees half a file."""
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def atomic_write(path: Path, save) -> None:
    """save(binary file) into a new, uniquely named temporary file beside `path`, then os.replace it into place.

    The temporary file is created exclusively (tempfile.mkstemp: O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, a random
    name), so a symlink planted at a predictable name is never followed and never overwritten (issue 17), and
    os.replace swaps the directory entry itself: a symlink already at `path` is replaced, not written through.
    Stdlib only: the device side uses it (harness/device/worker.py); the host's writer is harness.files."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            save(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _dump(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj), indent=1, sort_keys=True, allow_nan=False, default=_jsonable) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "item"):  # numpy scalars (float32 from a runtime, int64 from an index)
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _row(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _load(text: str, where: str) -> dict:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:  # a deeply nested document: one line, never a traceback (issue 17)
        raise InputError(f"{where}: invalid JSON: nested too deeply") from None
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a JSON object")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"{where}: schema version {version!r} is not supported by this harness (reads "
                         f"{SCHEMA_VERSION}); use the same harness version on the host and the device")
    return d


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
