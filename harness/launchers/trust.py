"""The trust boundary: everything a board (or a local worker) sends back is hostile input until checked here.

A lab shares its boards; whoever can log in to one can make its `python` print anything (issue 17). So the host
reads what a job sent back only through this module, which takes the job's output folder and the job, and
returns validated arrays and a validated result, or raises InfrastructureError (exit 3: the entry is failed as
`infrastructure`, says nothing about the model and is retried on --resume). No other module opens a board's file.

The rules, each with the failure it closes:
- **Fixed names, regular files, bounded sizes.** The host opens only `result.json`, `timings.npy` and
  `outputs/chunk-NNNNN.npz` inside the job's output folder, with O_NOFOLLOW | O_NONBLOCK, and keeps the file only if
  fstat says it is a regular file no larger than its limit: a name in result.json is compared with the expected
  name and never used as a path, so no absolute or `..` path, symlink, device file or FIFO is ever read (and a FIFO
  cannot block the open). A transfer from a board is read as a stream with a byte bound (`receive_tar`), never
  whole into memory.
- **Arrays without pickle.** `np.load(..., allow_pickle=False)` always (an object array is refused), after the
  zip's member names and unpacked sizes are checked from its central directory (a deflate bomb is refused before
  a byte is inflated). Chunks carry `sample_ids` (strings), `infer_ms` (finite, >= 0, one per sample) and
  `out0..outK` (one row per sample, numeric); timings are a 1-D float array of finite, non-negative milliseconds.
- **Every sample exactly once.** A chunk naming a sample the host did not send, naming one twice, or repeating one
  already collected is refused; an `ok` result whose samples did not all come back is refused with how many are
  missing (`check_returned`): a group's n never shrinks silently.
- **Claims cross-checked.** The entry name must be the job's; the backend's runtime and requested provider/delegate
  must be the job's, an `ok` result must prove it active, and a backend the board's health check found unavailable
  cannot come back active; `windows` holds only epoch-second [start, end] pairs in order; the environment
  fingerprint must agree with the one the host took itself (the board's health check, or this machine's for the
  local worker) on host, CPU, OS kernel, Python, runtimes and emulation.
  The first contradiction is named by its field.
- **Strings are data.** Every string in result.json (keys and values) is passed through `harness.names.shown`
  on arrival, so a reason with NUL or ANSI escapes is stored and printed as visible escapes, never raw.
- **JSON bounded in depth** (a deeply nested document is one line, not a RecursionError) and without NaN/Infinity.

Limits are settings with defaults (`Limits`, `limits()`), overridable per process through the environment:
| setting | variable | default |
|---|---|---|
| bytes per transfer (one round trip of chunks, or the final one) | BENCH_MAX_TRANSFER_MB | 1024 MiB |
| bytes per raw-output chunk (on disk and unpacked) | BENCH_MAX_CHUNK_MB | 64 MiB |
| bytes of timings.npy | BENCH_MAX_TIMINGS_MB | 64 MiB |
| bytes of result.json | BENCH_MAX_RESULT_KB | 1024 KiB |
| samples per job (sent, and named in one chunk) | BENCH_MAX_SAMPLES_PER_JOB | 1000000 |
(docs/remote.md, "Trust".) The file-opening rule follows open(2) O_NOFOLLOW/O_NONBLOCK and fstat(2) S_ISREG; the
archive rule follows numpy's own advice for untrusted .npy/.npz (numpy.load: "allow_pickle=False").
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from harness.errors import InfrastructureError, InputError
from harness.jobs import (OUTPUTS_DIR, RESULT_FILE, STATUS_INFRA_ERROR, STATUS_OK, TIMINGS_FILE, Job, JobResult,
                          _count_in)
from harness.limits import positive_int
from harness.names import shown

MIB = 1 << 20
CHUNK_NAME = re.compile(r"chunk-[0-9]{5}\.npz")
_MEMBER = re.compile(r"sample_ids\.npy|infer_ms\.npy|out[0-9]{1,3}\.npy")
_BLOCK = 1 << 16


@dataclass(frozen=True)
class Limits:
    """How much a board may send back (see the module docstring for the variables and defaults)."""

    transfer_bytes: int = 1024 * MIB
    chunk_bytes: int = 64 * MIB
    timings_bytes: int = 64 * MIB
    result_bytes: int = 1 * MIB
    samples_per_job: int = 1_000_000


# setting -> (environment variable, its unit in bytes or 1 for a count)
LIMIT_ENV = {"transfer_bytes": ("BENCH_MAX_TRANSFER_MB", MIB), "chunk_bytes": ("BENCH_MAX_CHUNK_MB", MIB),
             "timings_bytes": ("BENCH_MAX_TIMINGS_MB", MIB), "result_bytes": ("BENCH_MAX_RESULT_KB", 1024),
             "samples_per_job": ("BENCH_MAX_SAMPLES_PER_JOB", 1)}


def limits(environ: Mapping[str, str] = os.environ) -> Limits:
    """The defaults, each overridden by its environment variable (a positive integer, else UsageError, exit 2)."""
    kw = {}
    for name, (var, unit) in LIMIT_ENV.items():
        value = positive_int(var, None, environ)
        if value is not None:
            kw[name] = value * unit
    return Limits(**kw)


def _limit_text(name: str, lim: Limits) -> str:
    var, unit = LIMIT_ENV[name]
    value = getattr(lim, name)
    return f"{value // unit if unit > 1 else value}{' MiB' if unit == MIB else ' KiB' if unit == 1024 else ''} ({var})"


def _bad(where: str, what: str, problem: str) -> InfrastructureError:
    """One line: who sent it, which file or field, what is wrong with it."""
    return InfrastructureError(f"{where}: {what}: {problem}")


# -- opening ---------------------------------------------------------------------------------------------------
def _open_regular(path: Path, limit: int, limit_name: str, lim: Limits, where: str, what: str):
    """A binary file object for `path` when it is a regular file (not a symlink, FIFO or device) within `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _bad(where, what, "missing") from None
    except OSError as exc:
        if os.path.islink(path):
            raise _bad(where, what, "is a symbolic link, not a file") from None
        raise _bad(where, what, f"cannot be opened: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _bad(where, what, "is not a regular file (a device, FIFO or folder)")
        if st.st_size > limit:
            raise _bad(where, what, f"is {st.st_size} bytes, over the limit of {_limit_text(limit_name, lim)}")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _read_bounded(path: Path, limit: int, limit_name: str, lim: Limits, where: str, what: str) -> bytes:
    with _open_regular(path, limit, limit_name, lim, where, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew after fstat
        raise _bad(where, what, f"is over the limit of {_limit_text(limit_name, lim)}")
    return data


def printable(value: Any) -> Any:
    """Every string in a parsed JSON value (keys too) as `shown` prints it: control characters escaped."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, list):
        return [printable(v) for v in value]
    if isinstance(value, dict):
        return {shown(k): printable(v) for k, v in value.items()}
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes, where: str, what: str) -> Any:
    """Untrusted JSON: UTF-8, no NaN/Infinity, nesting bounded by the interpreter (one line, never a traceback);
    every string escaped (`printable`)."""
    try:
        return printable(json.loads(data.decode("utf-8"), parse_constant=_reject_constant))
    except UnicodeDecodeError:
        raise _bad(where, what, "is not UTF-8") from None
    except RecursionError:
        raise _bad(where, what, "is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and the constants above
        raise _bad(where, what, f"is not valid JSON: {shown(str(exc).splitlines()[0])}") from None


# -- result.json -------------------------------------------------------------------------------------------------
def expected_requested(job: Job) -> str:
    """The provider/delegate name the device's runner reports as `requested` for this job (harness.runners)."""
    from harness import runtimes

    b = job.backend
    if b.runtime not in runtimes.RUNTIMES:
        return b.provider or b.delegate or "default"
    return runtimes.requested(b)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# Environment facts that cannot differ between a board's health check and the job it ran moments later.
ENVIRONMENT_FIELDS = (("hostname_sha256",), ("cpu", "arch"), ("cpu", "model"), ("os", "kernel"),
                      ("python", "version"), ("runtimes",), ("emulation",))


def _at(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, Mapping) else None
    return d


def read_result(out_dir: Path, job: Job, *, where: str, lim: Limits | None = None,
                environment: Mapping[str, Any] | None = None,
                health: Mapping[str, Any] | None = None) -> JobResult:
    """The worker's result.json, validated against the job and the host's own view of the device.

    `environment`: the fingerprint the host took itself (the board's health check, or this machine's); `health`: the
    board's health report (its per-backend availability). Raises InfrastructureError naming the field."""
    lim = lim or limits()
    d = parse_json(_read_bounded(Path(out_dir) / RESULT_FILE, lim.result_bytes, "result_bytes", lim, where,
                                 RESULT_FILE), where, RESULT_FILE)
    try:
        result = JobResult.from_dict(d, RESULT_FILE)
    except InputError as exc:
        raise InfrastructureError(f"{where}: {exc.message}") from None
    check_claims(result, job, where=where, environment=environment, health=health)
    return result


def check_claims(result: JobResult, job: Job, *, where: str, environment: Mapping[str, Any] | None = None,
                 health: Mapping[str, Any] | None = None) -> None:
    """Each claim of `result` against the job sent and the host's own checks; the first contradiction raises."""
    def bad(field: str, problem: str) -> InfrastructureError:
        return _bad(where, f"{RESULT_FILE} field '{field}'", problem)

    if result.entry != job.entry:
        raise bad("entry", f"says {result.entry!r}, the job sent was {job.entry!r}")
    if not isinstance(result.reason, (str, type(None))):
        raise bad("reason", "is not a string")
    for name in ("init_ms", "first_inference_ms", "cpu_util_pct", "energy_mj_per_inference"):
        v = getattr(result, name)
        if v is not None and not (_finite(v) and v >= 0):
            raise bad(name, f"is {v!r}, not a finite number >= 0")
    for name in ("single_stream_batch", "real_faces_per_query"):
        v = getattr(result, name)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise bad(name, f"is {v!r}, not a count")
    for name in ("offline", "memory", "telemetry", "environment", "backend", "steady_state", "video", "search",
                 "windows"):
        v = getattr(result, name)
        if v is not None and not isinstance(v, Mapping):
            raise bad(name, "is not an object")
    if result.windows is not None:
        _check_windows(result.windows, bad)
    for name in ("throughput_ips", "duration_s"):
        v = (result.offline or {}).get(name)
        if v is not None and not (_finite(v) and v >= 0):
            raise bad(f"offline.{name}", f"is {v!r}, not a finite number >= 0")
    if not all(isinstance(n, str) for n in result.output_names):
        raise bad("output_names", "holds something other than strings")
    if not all(isinstance(n, str) and CHUNK_NAME.fullmatch(n) for n in result.chunks):
        raise bad("chunks", "names a file other than outputs/chunk-NNNNN.npz")

    if result.backend is not None:
        b = result.backend
        if b.get("runtime") != job.backend.runtime:
            raise bad("backend.runtime", f"is {b.get('runtime')!r}, the job asked for {job.backend.runtime!r}")
        if b.get("requested") != expected_requested(job):
            raise bad("backend.requested", f"is {b.get('requested')!r}, the job asked for "
                                           f"{expected_requested(job)!r}")
        active = b.get("active")
        if not isinstance(active, list) or not all(isinstance(a, str) for a in active):
            raise bad("backend.active", "is not a list of names")
        if result.ok and b.get("ok") is not True:
            raise bad("backend.ok", "the result is ok but the backend is not proven active")
        spec_requested = job.backend.provider or job.backend.delegate or "default"
        on_board = next((x for x in (health or {}).get("backends") or ()
                         if isinstance(x, Mapping) and x.get("runtime") == job.backend.runtime
                         and x.get("requested") == spec_requested), None)
        if on_board is not None and on_board.get("available") is False and b.get("ok") is True:
            raise bad("backend.active", f"claims {b.get('requested')} active; the board's health check found it "
                                        f"unavailable")
    if result.ok:
        for name in ("backend", "init_ms", "first_inference_ms", "single_stream_batch", "environment"):
            if getattr(result, name) is None:
                raise bad(name, "is missing from an ok result")
        if result.timings != TIMINGS_FILE:
            raise bad("timings", f"names {result.timings!r}; the only timings file a job returns is "
                                 f"{TIMINGS_FILE} in its output folder")
        if not result.output_names:
            raise bad("output_names", "is empty in an ok result")
    elif result.timings not in (None, TIMINGS_FILE):
        raise bad("timings", f"names {result.timings!r}, not {TIMINGS_FILE}")
    if environment is not None and result.environment is not None:
        for path in ENVIRONMENT_FIELDS:
            claimed, seen = _at(result.environment, path), _at(printable(dict(environment)), path)
            if claimed != seen:
                raise bad("environment." + ".".join(path), f"is {claimed!r}, the host's check of this device says "
                                                           f"{seen!r}")


# The windows' stamps are seconds since the epoch on the board's clock: a board whose clock reads before 2000 or
# after 2100 is not placing its windows on any clock the host can map (harness/launchers/host_meter.py).
WINDOW_EPOCH_S = (946684800.0, 4102444800.0)


def _check_windows(windows: Mapping[str, Any], bad) -> None:
    """result.json `windows` (TelemetryWindow.stamps): {"clock": "time.time", "timed": [start, end], "idle": [start,
    end] | null}, each a pair of finite epoch seconds in WINDOW_EPOCH_S with start <= end, the idle window ending
    before the timed one starts. Anything else is refused, naming the key."""
    unknown = sorted(set(windows) - {"clock", "timed", "idle"})
    if unknown:
        raise bad("windows", f"has unknown key(s) {', '.join(shown(str(k)) for k in unknown)}")
    if windows.get("clock") != "time.time":
        raise bad("windows.clock", f"is {shown(str(windows.get('clock')))!r}, not 'time.time'")
    for name in ("timed", "idle"):
        pair = windows.get(name)
        if pair is None and name == "idle":
            continue
        if not (isinstance(pair, list) and len(pair) == 2 and all(_finite(v) for v in pair)):
            raise bad(f"windows.{name}", "is not a pair of numbers [start, end]")
        lo, hi = WINDOW_EPOCH_S
        if not (lo <= pair[0] <= pair[1] <= hi):
            raise bad(f"windows.{name}", f"is {pair!r}: not start <= end, in seconds since the epoch")
    idle = windows.get("idle")
    if idle is not None and idle[1] > windows["timed"][0]:
        raise bad("windows.idle", "ends after the timed window starts")


def outcome(job: Job, out_dir: Path, *, where: str, exit_code: int | None, wall_s: float, fallback: str,
            lim: Limits | None = None, environment: Mapping[str, Any] | None = None,
            health: Mapping[str, Any] | None = None) -> JobResult:
    """What a launcher returns once the worker is gone: the validated result.json when there is one; else (or
    when it fails validation) an infrastructure-error result with `fallback` (or the validation error) as reason.

    A result that fails validation discards that attempt's raw outputs too: a board caught lying about one thing is
    not trusted for its chunks; the samples run again on --resume."""
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir / RESULT_FILE):
        try:
            result = read_result(out_dir, job, where=where, lim=lim, environment=environment, health=health)
            if result.status == STATUS_INFRA_ERROR:  # the worker's own infrastructure error: say which device
                result = result.replace(reason=f"{where}: {result.reason}")
            return result.replace(exit_code=exit_code, wall_s=wall_s)
        except InfrastructureError as exc:
            discard(out_dir)
            fallback = exc.message
    return infrastructure_result(job, out_dir, fallback, exit_code, wall_s)


def infrastructure_result(job: Job, out_dir: Path, reason: str, exit_code: int | None,
                          wall_s: float | None) -> JobResult:
    return JobResult(entry=job.entry, status=STATUS_INFRA_ERROR, reason=shown(reason),
                     chunks=tuple(chunk_names(out_dir)), exit_code=exit_code, wall_s=wall_s)


def discard(out_dir: Path) -> None:
    """Remove a job's output folder contents (the host's copy of what the device sent; never outside it)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or out_dir.is_symlink():
        return
    for entry in os.scandir(out_dir):
        p = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


# -- raw-output chunks -------------------------------------------------------------------------------------------
def chunk_names(out_dir: Path) -> list[str]:
    """The chunk files in the output folder, sorted; only names of the form chunk-NNNNN.npz (anything else is not
    read), and only when outputs/ is a real folder (a symlinked outputs/ is refused when read)."""
    folder = Path(out_dir) / OUTPUTS_DIR
    if folder.is_symlink() or not folder.is_dir():
        return []
    return sorted(e.name for e in os.scandir(folder) if CHUNK_NAME.fullmatch(e.name))


def chunk_paths(out_dir: Path, *, where: str) -> list[Path]:
    folder = Path(out_dir) / OUTPUTS_DIR
    if folder.is_symlink():
        raise _bad(where, OUTPUTS_DIR, "is a symbolic link, not a folder")
    return [folder / n for n in chunk_names(out_dir)]


@dataclass(frozen=True)
class Chunk:
    """One validated raw-output chunk: sample ids (str), infer_ms (float64, finite), outputs (one row per id)."""

    name: str
    sample_ids: tuple[str, ...]
    infer_ms: np.ndarray
    outputs: tuple[np.ndarray, ...]


def read_chunk(path: Path, *, where: str, lim: Limits | None = None) -> Chunk:
    """Open, size-check and parse one chunk without pickle; its arrays are shape- and value-checked."""
    lim = lim or limits()
    what = f"{OUTPUTS_DIR}/{shown(Path(path).name)}"
    with _open_regular(Path(path), lim.chunk_bytes, "chunk_bytes", lim, where, what) as fh:
        data = fh.read(lim.chunk_bytes + 1)
    if len(data) > lim.chunk_bytes:
        raise _bad(where, what, f"is over the limit of {_limit_text('chunk_bytes', lim)}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise _bad(where, what, "is not an npz (zip) archive") from None
    unpacked = sum(i.file_size for i in infos)
    if unpacked > lim.chunk_bytes:
        raise _bad(where, what, f"unpacks to {unpacked} bytes, over the limit of {_limit_text('chunk_bytes', lim)}")
    names = [i.filename for i in infos]
    odd = [n for n in names if not _MEMBER.fullmatch(n)]
    if odd or len(set(names)) != len(names):
        raise _bad(where, what, f"holds an unexpected member {shown(odd[0]) if odd else '(a duplicate)'!r}")
    keys = {n[:-4] for n in names}
    n_out = sum(1 for k in keys if k.startswith("out"))
    for k in ("sample_ids", "infer_ms", *(f"out{i}" for i in range(n_out))):
        if k not in keys:
            raise _bad(where, f"{what} '{k}'", "is missing")
    if n_out == 0:
        raise _bad(where, f"{what} 'out0'", "is missing")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in keys}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _bad(where, what, f"unreadable: {shown(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"
                   ) from None
    ids, ms = arrays["sample_ids"], arrays["infer_ms"]
    if ids.ndim != 1 or ids.dtype.kind != "U" or len(ids) == 0:
        raise _bad(where, f"{what} 'sample_ids'", f"is a {ids.dtype} array of shape {ids.shape}, not a list of ids")
    n = len(ids)
    if n > lim.samples_per_job:
        raise _bad(where, f"{what} 'sample_ids'", f"names {n} samples, over the limit of "
                                                  f"{_limit_text('samples_per_job', lim)}")
    if ms.ndim != 1 or ms.dtype.kind not in "fiu" or len(ms) != n:
        raise _bad(where, f"{what} 'infer_ms'", f"is a {ms.dtype} array of shape {ms.shape} for {n} samples")
    ms = ms.astype(np.float64)
    if not (np.isfinite(ms).all() and (ms >= 0).all()):
        raise _bad(where, f"{what} 'infer_ms'", "holds a value that is not a finite number >= 0")
    outs = []
    for i in range(n_out):
        o = arrays[f"out{i}"]
        if o.ndim < 1 or o.shape[0] != n or o.dtype.kind not in "fiub":
            raise _bad(where, f"{what} 'out{i}'", f"is a {o.dtype} array of shape {o.shape} for {n} samples")
        outs.append(o)
    return Chunk(Path(path).name, tuple(str(s) for s in ids), ms, tuple(outs))


def checked_ids(chunk: Chunk, *, allowed: Iterable[str], done: set[str], seen: set[str],
                where: str) -> list[int]:
    """Indices of `chunk`'s samples to record. A chunk whose every sample is already `done` was recorded before its
    file was removed (an interrupted collection) and gives none; otherwise each id must be one the host sent
    (`allowed`), not repeated in the chunk or in this collection (`seen`), and not already done."""
    what = f"{OUTPUTS_DIR}/{shown(chunk.name)} 'sample_ids'"
    again = next((s for s in chunk.sample_ids if s in seen), None)
    if again is not None:
        raise _bad(where, what, f"returns sample {shown(again)!r} twice")
    if all(s in done for s in chunk.sample_ids):
        return []
    allowed = set(allowed)
    keep = []
    for j, sid in enumerate(chunk.sample_ids):
        if sid not in allowed:
            raise _bad(where, what, f"names sample {shown(sid)!r}, which the host did not send")
        if sid in seen or sid in done:
            raise _bad(where, what, f"returns sample {shown(sid)!r} twice")
        seen.add(sid)
        keep.append(j)
    return keep


def check_returned(job: Job, returned: set[str], *, where: str) -> None:
    """Every sample the job sent came back (exactly once is enforced as chunks are read); else how many did not."""
    missing = [sid for sid, _ in job.samples if sid not in returned]
    if missing:
        raise _bad(where, f"{OUTPUTS_DIR} 'sample_ids'", f"{len(missing)} of {len(job.samples)} samples sent did not "
                                                         f"come back (first: {shown(missing[0])!r})")


# -- timings ---------------------------------------------------------------------------------------------------
def read_timings(out_dir: Path, result: JobResult, *, where: str, lim: Limits | None = None) -> np.ndarray:
    """timings.npy of an ok result: a non-empty 1-D float array of finite latencies >= 0 ms, loaded without pickle
    from the job's own output folder (the name in result.json was checked to be TIMINGS_FILE; it is never a path)."""
    lim = lim or limits()
    if result.timings != TIMINGS_FILE:
        raise _bad(where, f"{RESULT_FILE} field 'timings'", f"names {result.timings!r}, not {TIMINGS_FILE}")
    data = _read_bounded(Path(out_dir) / TIMINGS_FILE, lim.timings_bytes, "timings_bytes", lim, where, TIMINGS_FILE)
    try:
        t = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _bad(where, TIMINGS_FILE, f"unreadable: {shown(str(exc).splitlines()[0] if str(exc) else 'empty')}"
                   ) from None
    if not isinstance(t, np.ndarray) or t.ndim != 1 or t.dtype.kind != "f":
        raise _bad(where, TIMINGS_FILE, f"is a {getattr(t, 'dtype', type(t).__name__)} array of shape "
                                        f"{getattr(t, 'shape', '?')}, not a 1-D float array")
    if t.size == 0:
        raise _bad(where, TIMINGS_FILE, "is empty")
    if not (np.isfinite(t).all() and (t >= 0).all()):
        raise _bad(where, TIMINGS_FILE, "holds a value that is not a finite number >= 0")
    return t.astype(np.float64)


# -- transfers ---------------------------------------------------------------------------------------------------
class _Bounded(io.RawIOBase):
    """A read-only stream that refuses to deliver more than `limit` bytes (the rest of a transfer is not read)."""

    def __init__(self, raw, limit: int, fail):
        self.raw, self.limit, self.fail, self.n = raw, limit, fail, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.raw.read(min(len(b), _BLOCK))
        self.n += len(data)
        if self.n > self.limit:
            raise self.fail()
        b[:len(data)] = data
        return len(data)


def allowed_member(name: str, final: bool) -> str | None:
    """The limit setting for a tar member the host accepts from a board, None for any other member."""
    if name.startswith(OUTPUTS_DIR + "/") and CHUNK_NAME.fullmatch(name[len(OUTPUTS_DIR) + 1:]):
        return "chunk_bytes"
    if final and name == TIMINGS_FILE:
        return "timings_bytes"
    if final and name == RESULT_FILE:
        return "result_bytes"
    return None


def receive_tar(stream, out_dir: Path, *, where: str, final: bool, have: set[str] = frozenset(),
                lim: Limits | None = None) -> int:
    """Unpack a board's `tar -cf -` stream into out_dir, as a stream bounded by the transfer limit: only regular
    members with an accepted name (chunks; at the end timings.npy and result.json), each within its own limit,
    each written by write-then-rename with an exclusive temporary name. Returns the bytes read."""
    import tarfile

    lim = lim or limits()
    out_dir = Path(out_dir)
    bounded = _Bounded(stream, lim.transfer_bytes, lambda: _bad(
        where, "transfer", f"is over the limit of {_limit_text('transfer_bytes', lim)}"))
    try:
        tar = tarfile.open(fileobj=io.BufferedReader(bounded, _BLOCK), mode="r|")
    except tarfile.ReadError:
        return bounded.n  # nothing there yet (an empty stream)
    except (tarfile.TarError, EOFError) as exc:
        raise _bad(where, "transfer", f"is not a tar stream: {shown(str(exc))}") from None
    try:
        for member in tar:
            setting = allowed_member(member.name, final)
            if setting is None or not member.isfile() or member.name in have:
                continue  # never extracted: links, devices, other names, what the host has
            if member.size > getattr(lim, setting):
                raise _bad(where, shown(member.name), f"is {member.size} bytes, over the limit of "
                                                      f"{_limit_text(setting, lim)}")
            dest = out_dir / member.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.parent.is_symlink():
                raise _bad(where, OUTPUTS_DIR, "is a symbolic link, not a folder")
            src = tar.extractfile(member)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    shutil.copyfileobj(src, fh, _BLOCK)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except (tarfile.TarError, EOFError) as exc:
        raise _bad(where, "transfer", f"is not a whole tar stream: {shown(str(exc))}") from None
    finally:
        tar.close()
    return bounded.n


def parse_health(stdout: bytes, *, where: str, lim: Limits | None = None) -> dict:
    """The board's health report (its stdout), bounded and escaped like result.json."""
    lim = lim or limits()
    if len(stdout) > lim.result_bytes:
        raise _bad(where, "health report", f"is {len(stdout)} bytes, over the limit of "
                                           f"{_limit_text('result_bytes', lim)}")
    report = parse_json(stdout, where, "health report")
    if not isinstance(report, dict):
        raise _bad(where, "health report", "is not a JSON object")
    backends = report.get("backends")
    if not isinstance(backends, list) or not all(
            isinstance(b, dict) and isinstance(b.get("runtime"), str) and isinstance(b.get("requested"), str)
            and isinstance(b.get("available"), bool) for b in backends):
        raise _bad(where, "health report field 'backends'", "is not a list of {runtime, requested, available}")
    for name in ("problems",):
        if not isinstance(report.get(name, []), list):
            raise _bad(where, f"health report field '{name}'", "is not a list")
    if report.get("fingerprint") is not None and not isinstance(report["fingerprint"], dict):
        raise _bad(where, "health report field 'fingerprint'", "is not an object")
    return report


__all__ = ["Limits", "limits", "read_result", "outcome", "read_chunk", "checked_ids", "check_returned",
           "read_timings", "receive_tar", "parse_health", "chunk_names", "chunk_paths", "discard", "Chunk",
           "STATUS_OK", "read_search", "SearchReturn"]


# -- the 1:N search workload (issue 18) ---------------------------------------------------------------------------
SCORE_SLACK = 1e-3  # a cosine score of unit vectors lies in [-1, 1]; float32 rounding may step just outside
MAX_MEMORY_MB = float(1 << 24)  # 16 TiB: a bound on the memory figures a board may report for one gallery size


def score_slack(precision: str, dim: int) -> float:
    """How far outside [-1, 1] a board's score may lie in `precision`: float32/float16 rounding (SCORE_SLACK), or for
    int8 the most a dequantised unit row's norm can exceed 1: each of its `dim` components is off by at most half a
    step (max|x| / 127 / 2 <= 1/254), so the row by at most sqrt(dim) / 254 (harness/device/search.py)."""
    return SCORE_SLACK + (0.5 * math.sqrt(dim) / 127 if precision == "int8" else 0.0)


@dataclass(frozen=True)
class SearchReturn:
    """A validated search job's return: per probe (sample_ids, in the job's order) its top-k gallery positions and
    scores, and the single-probe search timings of each gallery size (`sizes`, in the job's order)."""

    sample_ids: tuple[str, ...]
    top_index: np.ndarray   # (n, k) int64 in [0, n_gallery), distinct per row
    top_score: np.ndarray   # (n, k) float64, finite, in [-1, 1] (within SCORE_SLACK), descending per row
    sizes: tuple[int, ...]
    timings: tuple[np.ndarray, ...]
    dim: int
    blas_threads: dict = dc_field(default_factory=dict)  # requested, used, source (harness/device/blas.py)
    precision: str = "fp32"                               # the gallery's storage precision on the board
    per_size: tuple = ()  # per size: size, gallery_bytes, build_ms, rss_before_mb, rss_growth_mb, check_index/_score


def read_search(out_dir: Path, job: Job, result: JobResult, *, n_gallery: int, dim: int, where: str,
                lim: Limits | None = None) -> SearchReturn:
    """What a board sent back for a search job (task "search", harness.jobs.SearchSpec), checked against the job and
    the gallery the host sent (`n_gallery` templates of `dim` components); InfrastructureError naming the file or
    field for anything else: wrong shapes or dtypes, NaN, ids outside the gallery or repeated, scores out of range
    or not in rank order, timings that do not add up to the sizes timed."""
    lim = lim or limits()
    spec = job.search
    if spec is None:
        raise ValueError("read_search: not a search job")
    meta = result.search
    field_ = f"{RESULT_FILE} field 'search'"
    if not isinstance(meta, Mapping):
        raise _bad(where, field_, "is missing from an ok search result")
    if meta.get("k") != spec.k or meta.get("sizes") != list(spec.sizes):
        raise _bad(where, field_, f"says k={meta.get('k')!r}, sizes={meta.get('sizes')!r}; the job asked for "
                                  f"k={spec.k}, sizes={list(spec.sizes)}")
    if meta.get("n_gallery") != n_gallery or meta.get("dim") != dim:
        raise _bad(where, field_, f"says a gallery of {meta.get('n_gallery')!r} x {meta.get('dim')!r}; the host sent "
                                  f"{n_gallery} x {dim}")
    counts = meta.get("counts")
    if not (isinstance(counts, list) and len(counts) == len(spec.sizes)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)):
        raise _bad(where, f"{field_} 'counts'", "is not one positive count per gallery size")
    blas_threads = _blas_threads(meta.get("blas_threads"), job, where=where, field_=f"{field_} 'blas_threads'")
    if meta.get("precision", "fp32") != spec.precision:
        raise _bad(where, f"{field_} 'precision'", f"says '{shown(str(meta.get('precision')))[:20]}'; the job asked "
                                                   f"for {spec.precision}")
    slack = score_slack(spec.precision, dim)
    per_size = _per_size(meta.get("per_size"), spec, dim, slack, where=where, field_=f"{field_} 'per_size'")
    t = read_timings(out_dir, result, where=where, lim=lim)
    if sum(counts) != len(t):
        raise _bad(where, TIMINGS_FILE, f"holds {len(t)} timings, the counts per size add up to {sum(counts)}")
    bounds = np.cumsum([0] + counts)
    timings = tuple(t[bounds[i]:bounds[i + 1]] for i in range(len(counts)))

    allowed = [sid for sid, _ in job.samples]
    seen: set[str] = set()
    ids, idx, sc = [], [], []
    for path in chunk_paths(out_dir, where=where):
        chunk = read_chunk(path, where=where, lim=lim)
        keep = checked_ids(chunk, allowed=allowed, done=set(), seen=seen, where=where)
        what = f"{OUTPUTS_DIR}/{shown(chunk.name)}"
        if len(chunk.outputs) != 2:
            raise _bad(where, what, f"holds {len(chunk.outputs)} outputs, a search returns 2 (ids, scores)")
        i, s = chunk.outputs
        n = len(chunk.sample_ids)
        if i.shape != (n, spec.k) or i.dtype.kind not in "iu":
            raise _bad(where, f"{what} 'out0'", f"is a {i.dtype} array of shape {i.shape}, not {n} x {spec.k} "
                                                f"integer gallery ids")
        if s.shape != (n, spec.k) or s.dtype.kind != "f":
            raise _bad(where, f"{what} 'out1'", f"is a {s.dtype} array of shape {s.shape}, not {n} x {spec.k} scores")
        i, s = i.astype(np.int64), s.astype(np.float64)
        _check_candidates(i, s, n_gallery, slack, where=where, what=what)
        ids += [chunk.sample_ids[j] for j in keep]
        idx.append(i[keep])
        sc.append(s[keep])
    check_returned(job, set(ids), where=where)
    order = {sid: j for j, sid in enumerate(ids)}
    perm = [order[sid] for sid in allowed]
    return SearchReturn(tuple(allowed), np.concatenate(idx)[perm], np.concatenate(sc)[perm], tuple(spec.sizes),
                        timings, dim, blas_threads, spec.precision, per_size)


def _check_candidates(i: np.ndarray, s: np.ndarray, n_gallery: int, slack: float, *, where: str, what: str) -> None:
    """Candidate lists (ids n x k int64, scores n x k float64) of a gallery of n_gallery: ids in it and distinct per
    probe, scores finite, within [-1, 1] up to `slack`, descending."""
    if ((i < 0) | (i >= n_gallery)).any():
        raise _bad(where, f"{what} 'out0'", f"holds a gallery id outside [0, {n_gallery})")
    if (np.diff(np.sort(i, axis=1), axis=1) == 0).any():
        raise _bad(where, f"{what} 'out0'", "names a gallery template twice for one probe")
    if not np.isfinite(s).all() or (np.abs(s) > 1 + slack).any():
        raise _bad(where, f"{what} 'out1'", "holds a score that is not a finite number in [-1, 1]")
    if (np.diff(s, axis=1) > 0).any():
        raise _bad(where, f"{what} 'out1'", "holds candidates not in descending score order")


def _matrix(value: Any, rows: int, cols: int, ok) -> bool:
    """Whether `value` is a list of `rows` lists of `cols` elements that each pass `ok`."""
    return (isinstance(value, list) and len(value) == rows
            and all(isinstance(r, list) and len(r) == cols and all(ok(v) for v in r) for r in value))


def _per_size(value: Any, spec, dim: int, slack: float, *, where: str, field_: str) -> tuple:
    """The board's per-size memory and check records, checked: one per size in the job's order; gallery_bytes exactly
    what `size` rows of `dim` take in the job's precision (harness/device/search.py bytes_per_row); build time and
    RSS figures finite, >= 0 and bounded; the check probes' candidate lists as for the accuracy pass, ids within the
    size. A board that sends none is refused: the sizes' memory and their top-k check are part of the job."""
    from harness.device.search import bytes_per_row

    if not isinstance(value, list) or len(value) != len(spec.sizes):
        raise _bad(where, field_, f"is not a list of one record per gallery size ({len(spec.sizes)})")
    out = []
    n_check = len(spec.check_rows)
    for j, (size, rec) in enumerate(zip(spec.sizes, value)):
        what = f"{field_}[{j}]"
        if not isinstance(rec, Mapping) or rec.get("size") != size:
            raise _bad(where, what, f"is not the record of the gallery of {size}")
        want = size * bytes_per_row(dim, spec.precision)
        if rec.get("gallery_bytes") != want:
            raise _bad(where, f"{what} 'gallery_bytes'", f"says '{shown(str(rec.get('gallery_bytes')))[:24]}'; "
                                                         f"{size} {spec.precision} templates of {dim} take {want}")
        for name in ("build_ms", "rss_before_mb", "rss_growth_mb"):
            v = rec.get(name)
            if not (_finite(v) and 0 <= v <= (MAX_MEMORY_MB if name != "build_ms" else 86_400_000)):
                raise _bad(where, f"{what} '{name}'", f"is '{shown(str(v))[:24]}', not a finite number >= 0 in bounds")
        ci, cs = rec.get("check_index"), rec.get("check_score")
        if not (_matrix(ci, n_check, spec.k, lambda v: _count_in(v, 0, size - 1))
                and _matrix(cs, n_check, spec.k, _finite)):
            raise _bad(where, f"{what} 'check_index'/'check_score'",
                       f"are not {n_check} x {spec.k} candidate ids and scores")
        ci = np.array(ci, dtype=object).astype(np.int64).reshape(n_check, spec.k) if n_check else \
            np.zeros((0, spec.k), np.int64)
        cs = np.array(cs, dtype=np.float64).reshape(n_check, spec.k)
        _check_candidates(ci, cs, size, slack, where=where, what=what)
        out.append({"size": size, "gallery_bytes": want, "build_ms": float(rec["build_ms"]),
                    "rss_before_mb": float(rec["rss_before_mb"]), "rss_growth_mb": float(rec["rss_growth_mb"]),
                    "check_index": ci, "check_score": cs})
    return tuple(out)


MAX_THREADS = 65536  # a bound on the thread count a board may claim its BLAS uses


def _blas_threads(value: Any, job: Job, *, where: str, field_: str) -> dict:
    """The board's BLAS thread record (harness/device/blas.py), checked: the request must be the job's, the count a
    number of threads or the words the device uses when it cannot read one; its source is shown escaped and short.
    A board that reports none gets "not reported"."""
    requested = job.backend.threads if job.backend.threads > 0 else "runtime default"
    if value is None:
        return {"requested": requested, "used": "not reported"}
    if not isinstance(value, Mapping):
        raise _bad(where, field_, "is not an object")
    if value.get("requested") != requested:
        raise _bad(where, field_, f"says {value.get('requested')!r} threads requested, the job asked for {requested!r}")
    used = value.get("used")
    if not (_count_in(used, 1, MAX_THREADS) or used in ("as requested", "unknown")):
        raise _bad(where, field_, f"says {shown(str(used))[:40]!r} threads used, not a count in [1, {MAX_THREADS}]")
    source = value.get("source")
    if not isinstance(source, str):
        raise _bad(where, field_, "has no source string")
    return {"requested": requested, "used": used, "source": shown(source)[:200]}
