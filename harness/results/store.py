"""The run directory store: create runs exclusively, append samples durably, write arrays and run.json atomically.

Layout and contracts are in docs/architecture.md ("Run directory"). Durability rules, because a benchmark on a
Raspberry Pi can be killed or lose power at any moment:
- samples/<entry>.jsonl: one record per line, flushed per record and fsynced per batch; a kill can leave a torn
  last line, which readers drop and a resumed writer truncates before appending.
- npy arrays and run.json: written to a temporary file in the same directory, fsynced, then os.replace'd, so a
  reader sees the old file or the new one, never half of one.
- a run directory is created with mkdir (exclusive): an existing run is never overwritten.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import InputError, IntegrityError, UnknownIdError, UsageError
from harness.files import atomic_write_bytes, cannot_write, ensure_dir, ensure_writable_dir, naming
from harness.names import is_safe_id, safe_id, shown
from harness.results import schema

RUN_JSON = "run.json"
ARRAY_KINDS = ("embeddings", "timings")
SAMPLES_DIR = "samples"
FSYNC_EVERY = 32  # records per fsync: bounds the loss on power failure to one batch without an fsync per image


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(target: str, now: datetime | None = None) -> str:
    """'<UTC yyyymmddTHHMMSSZ>-<target>-<6 hex>': sorts by time, says where it ran, unique within a second."""
    safe_id("target id", target)
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{target}-{secrets.token_hex(3)}"


def _check_id(kind: str, value: str) -> str:
    """Entry and run ids become file names: refuse anything that could escape the run directory."""
    return safe_id(kind, value)


def _finite(obj: Any) -> Any:
    """NaN/inf are not JSON: store them as null so every JSON reader (jq, browsers) can read run.json."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a samples file. A torn LAST line (a kill mid-write) is dropped; a bad line elsewhere is corruption."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:  # no newline after it: the write never finished
                break
            raise IntegrityError(f"{path}:{i + 1}: corrupt sample record ({exc.msg})") from None
    return records


def _truncate_torn_tail(path: Path) -> None:
    """Cut a partial last line so the next append starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
            fh.flush()
            os.fsync(fh.fileno())


@dataclass
class Run:
    """A loaded run: its directory and its (upgraded, validated) run.json document."""

    path: Path
    doc: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.doc["run_id"]

    @property
    def target(self) -> str:
        return self.doc["target"]["id"]

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.doc.get("entries", [])

    def entry(self, entry_id: str) -> dict[str, Any]:
        for e in self.entries:
            if e["entry"] == entry_id:
                return e
        raise UnknownIdError(f"entry in run {self.run_id}", entry_id, [e["entry"] for e in self.entries])

    def array_path(self, kind: str, entry_id: str) -> Path:
        if kind not in ARRAY_KINDS:
            raise UsageError(f"unknown array kind '{kind}'; valid: {', '.join(ARRAY_KINDS)}")
        return self.path / kind / f"{_check_id('entry id', entry_id)}.npy"

    def array(self, kind: str, entry_id: str) -> np.ndarray | None:
        """The entry's timings/embeddings array, None when the run has none (e.g. an accuracy-only entry)."""
        path = self.array_path(kind, entry_id)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise IntegrityError(f"{path}: unreadable array ({exc})") from None

    def timings(self, entry_id: str) -> np.ndarray | None:
        return self.array("timings", entry_id)

    def samples(self, entry_id: str) -> list[dict[str, Any]]:
        return read_jsonl(self.path / SAMPLES_DIR / f"{_check_id('entry id', entry_id)}.jsonl")


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load and validate results/<run_id>/run.json, upgrading older schema versions; IntegrityError if corrupt."""
    path = Path(path)
    where = str(path)
    if not path.is_dir():
        raise IntegrityError(f"{where}: not a run directory")
    run_json = path / RUN_JSON
    if not run_json.exists():
        raise IntegrityError(f"{where}: no run.json (half-written or not a run directory)")
    try:
        doc = json.loads(run_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{run_json}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{run_json}: top level is not a JSON object")
    doc = schema.upgrade(doc, where=str(run_json))
    schema.validate(doc, str(run_json))
    if doc.get("run_id") != path.name:
        raise IntegrityError(f"{run_json}: run_id '{doc.get('run_id')}' does not match its directory '{path.name}'")
    return Run(path=path, doc=doc)


def existing_results_dir(root: Path) -> Path:
    """`root` when it is an existing folder; else InputError saying it is missing or a file (never created here)."""
    if not root.exists():
        raise InputError(f"results folder {shown(root)} does not exist (set --results-dir or BENCH_RESULTS)")
    if not root.is_dir():
        raise InputError(f"results folder {shown(root)} is not a folder")
    return root


def run_dirs(root: Path) -> list[Path]:
    """Candidate run directories under root (hidden and non-directories ignored), sorted by name = by time."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def iter_runs(root: str | os.PathLike[str]) -> Iterator[Run]:
    """Every loadable run under root; a corrupt one is skipped with a warning naming it and why."""
    for path in run_dirs(Path(root)):
        try:
            yield load_run(path)
        except IntegrityError as exc:
            warnings.warn(f"skipping run {path.name}: {exc}", stacklevel=2)


def resolve_run(ref: str, root: str | os.PathLike[str]) -> Path:
    """A run given as a directory path, a run id under root, or a unique prefix of one."""
    root = Path(root)
    if Path(ref).is_dir():
        return Path(ref)
    if not root.is_dir():
        existing_results_dir(root)  # says the results folder is missing or a file, not "unknown run"
    if is_safe_id(ref) and (root / ref).is_dir():
        return root / ref
    names = [p.name for p in run_dirs(root)]
    matches = [n for n in names if n.startswith(ref)]
    if len(matches) == 1:
        return root / matches[0]
    if len(matches) > 1:
        raise UsageError(f"run '{ref}' is ambiguous under {root}: {', '.join(matches[:5])}")
    raise UnknownIdError(f"run under {root}", ref, names[-10:])


@dataclass
class RunWriter:
    """Writes one run directory. Use as a context manager (or call close()) so appended samples are fsynced."""

    path: Path
    run_id: str
    index: Any = None  # RunIndex | None: updated whenever run.json is written
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)
    _unsynced: dict[str, int] = field(default_factory=dict, repr=False)

    def _samples_path(self, entry: str) -> Path:
        return self.path / SAMPLES_DIR / f"{_check_id('entry id', entry)}.jsonl"

    def append_sample(self, entry: str, record: Mapping[str, Any]) -> None:
        """Append one per-sample record: written and flushed now, fsynced every FSYNC_EVERY records and on close."""
        self.append_samples(entry, [record])

    def append_samples(self, entry: str, records: Iterable[Mapping[str, Any]]) -> None:
        fh = self._handles.get(entry)
        path = self._samples_path(entry)
        with naming(path):  # a full disk names the samples file (write(2) errors carry no file name)
            if fh is None:
                path.parent.mkdir(exist_ok=True)
                _truncate_torn_tail(path)  # a resumed run continues on a clean line
                fh = self._handles[entry] = open(path, "a", encoding="utf-8")
                self._unsynced[entry] = 0
            for record in records:
                fh.write(json.dumps(_finite(record), ensure_ascii=False, allow_nan=False) + "\n")
                self._unsynced[entry] += 1
            fh.flush()
            if self._unsynced[entry] >= FSYNC_EVERY:
                os.fsync(fh.fileno())
                self._unsynced[entry] = 0

    def sync(self) -> None:
        """fsync every open samples file (call at the end of an entry)."""
        for entry, fh in self._handles.items():
            with naming(fh.name):
                fh.flush()
                os.fsync(fh.fileno())
            self._unsynced[entry] = 0

    def close(self) -> None:
        try:
            self.sync()
        finally:
            for fh in self._handles.values():
                try:
                    fh.close()
                except OSError:  # its flush failed the same way sync() just reported
                    pass
            self._handles.clear()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def samples(self, entry: str) -> list[dict[str, Any]]:
        """Records written so far for `entry` (torn tail dropped)."""
        if entry in self._handles:
            self._handles[entry].flush()
        return read_jsonl(self._samples_path(entry))

    def done_sample_ids(self, entry: str) -> set[str]:
        """sample_ids already recorded for `entry`: a resumed run skips them."""
        return {r["sample_id"] for r in self.samples(entry) if "sample_id" in r}

    def write_array(self, kind: str, entry: str, arr: np.ndarray) -> Path:
        """Write timings/<entry>.npy or embeddings/<entry>.npy atomically."""
        if kind not in ARRAY_KINDS:
            raise UsageError(f"unknown array kind '{kind}'; valid: {', '.join(ARRAY_KINDS)}")
        path = self.path / kind / f"{_check_id('entry id', entry)}.npy"
        path.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def write_run_json(self, doc: Mapping[str, Any]) -> Path:
        """Validate `doc` against the schema, then write run.json atomically and update the index."""
        doc = _finite(dict(doc))
        if doc.get("run_id") != self.run_id:
            raise UsageError(f"run.json for {self.path}: run_id '{doc.get('run_id')}' is not '{self.run_id}'")
        schema.validate(doc, str(self.path / RUN_JSON))
        data = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")
        path = self.path / RUN_JSON
        atomic_write_bytes(path, data)
        if self.index is not None:
            self.index.upsert(Run(self.path, doc))
        return path

    def read_run_json(self) -> dict[str, Any]:
        return load_run(self.path).doc


class RunStore:
    """The results root: creates new runs and reopens existing ones; keeps the SQLite index in step."""

    def __init__(self, root: str | os.PathLike[str], *, use_index: bool = True):
        self.root = Path(root)
        self._use_index = use_index

    def _index(self) -> Any:
        if not self._use_index:
            return None
        from harness.results.index import RunIndex  # local import: index imports this module

        return RunIndex(self.root)

    def create(self, meta: Mapping[str, Any], run_id: str | None = None) -> RunWriter:
        """Make results/<run_id> exclusively and write an initial run.json (status 'partial', no entries).

        `meta` is the run.json skeleton (target, settings, environment, data, reference ...); `target` may be an id
        string or {"id": ...}. The run id is generated from the target unless given. Never overwrites a run.
        """
        doc = dict(meta)
        target = doc.get("target")
        if isinstance(target, str):
            doc["target"] = {"id": target, "profile": {}}
        if not isinstance(doc.get("target"), Mapping) or "id" not in doc["target"]:
            raise UsageError("run metadata needs a target id (meta['target'] = 'cpu' or {'id': 'cpu', ...})")
        run_id = _check_id("run id", run_id or new_run_id(doc["target"]["id"]))
        ensure_dir(self.root, "results folder")
        path = self.root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise UsageError(f"run {run_id} already exists in {self.root}; runs are never overwritten") from None
        except OSError as exc:
            raise cannot_write(self.root, exc, "results folder") from None
        doc.update(run_id=run_id, schema_version=schema.SCHEMA_VERSION)
        doc.setdefault("created_utc", utc_now())
        doc.setdefault("finished_utc", None)
        doc.setdefault("status", "partial")
        doc.setdefault("entries", [])
        writer = RunWriter(path=path, run_id=run_id, index=self._index())
        writer.write_run_json(doc)
        return writer

    def open_existing(self, run_id: str) -> RunWriter:
        """Reopen a run for resume: its samples files are appended to (torn tails cut first)."""
        path = self.root / _check_id("run id", run_id)
        if not path.is_dir():
            existing_results_dir(self.root)
            raise UnknownIdError(f"run under {self.root}", run_id, [p.name for p in run_dirs(self.root)][-10:])
        load_run(path)  # refuse to resume into a corrupt run
        ensure_writable_dir(path, "run folder")  # resuming appends: say so now if the folder is read-only
        return RunWriter(path=path, run_id=run_id, index=self._index())

    def load(self, ref: str) -> Run:
        return load_run(resolve_run(ref, self.root))

    def __iter__(self) -> Iterator[Run]:
        return iter_runs(self.root)
