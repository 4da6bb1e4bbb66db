"""SQLite index of the runs under a results root (results/index.sqlite), for fast `bench runs` queries.

The run directories are the truth; the index is a cache. It is rebuilt from them when missing or corrupt, and
synced on every query (new directories added, vanished ones dropped). WAL journaling plus a busy timeout let two
`bench run` processes finishing at the same time both record their runs.

A results folder the process cannot write (a read-only mount of a device's results, another user's folder) is still
listed: the index is then built in memory from the run directories for this command, with one warning, and nothing
is written there. Reading never creates the results folder.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import IntegrityError, UsageError
from harness.names import shown
from harness.results.store import Run, existing_results_dir, load_run, run_dirs

INDEX_NAME = "index.sqlite"
BUSY_TIMEOUT_MS = 30_000  # a writer holds the lock for milliseconds; 30 s only bites if something is truly stuck

_COLUMNS = ("run_id", "target", "created_utc", "commit_sha", "dirty", "status", "models", "variants", "path")
_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, target TEXT NOT NULL, created_utc TEXT NOT NULL, commit_sha TEXT, dirty INTEGER,
    status TEXT NOT NULL, models TEXT NOT NULL, variants TEXT NOT NULL, path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_target ON runs(target, created_utc);
"""


@dataclass(frozen=True)
class RunRow:
    run_id: str
    target: str
    created_utc: str
    commit: str | None
    dirty: bool | None
    status: str
    models: tuple[str, ...]
    variants: tuple[str, ...]
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "models": list(self.models), "variants": list(self.variants)}


def _git(env: dict[str, Any]) -> tuple[str | None, bool | None]:
    """Commit and dirty flag from the environment fingerprint ({"git": {"commit", "dirty"}} or flat keys)."""
    git = env.get("git") if isinstance(env.get("git"), dict) else env
    commit = git.get("commit") or git.get("git_commit")
    dirty = git.get("dirty", git.get("git_dirty"))
    return (str(commit) if commit else None), (bool(dirty) if isinstance(dirty, bool) else None)


def _row_values(run: Run) -> tuple[Any, ...]:
    commit, dirty = _git(run.doc.get("environment") or {})
    models = sorted({e["model"] for e in run.entries})
    variants = sorted({e["variant"] for e in run.entries})
    return (run.run_id, run.target, run.doc["created_utc"], commit, None if dirty is None else int(dirty),
            run.doc["status"], ",".join(models), ",".join(variants), str(run.path.resolve()))


class RunIndex:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / INDEX_NAME
        self._memory: sqlite3.Connection | None = None  # the in-memory index of a read-only results folder

    def _writable(self) -> bool:
        # os.access reports a read-only mount (EROFS) even to root, and missing permissions to everyone else.
        return os.access(self.root, os.W_OK | os.X_OK) and (not self.path.exists() or os.access(self.path, os.W_OK))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        existing_results_dir(self.root)
        if self._memory is None and not self._writable():
            warnings.warn(f"results folder {shown(self.root)} is read-only: listing from the run directories, "
                          "index not updated", stacklevel=4)
            self._memory = sqlite3.connect(":memory:", isolation_level=None)
            self._memory.executescript(_DDL)
        if self._memory is not None:
            yield self._memory
            return
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Switching a new file to WAL and creating the table take an exclusive lock that SQLite does not wait
            # for ("database is locked" at once when two processes open a fresh index together): one at a time.
            with open(f"{self.path}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_DDL)
            yield con
        finally:
            con.close()

    def _healthy(self) -> Any:
        """A connection context to a usable index; a corrupt file is moved aside and rebuilt from the run dirs."""
        try:
            with self._connect() as con:
                con.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc):
                raise
            warnings.warn(f"{self.path}: corrupt index ({exc}); rebuilding from the run directories", stacklevel=3)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.rebuild()
        return self._connect()

    def upsert(self, run: Run) -> None:
        """Record (or refresh) one run; safe against concurrent writers (BEGIN IMMEDIATE waits on the lock)."""
        with self._healthy() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute(f"INSERT OR REPLACE INTO runs ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                        _row_values(run))
            con.execute("COMMIT")

    def rebuild(self) -> int:
        """Re-create the index from every loadable run directory; returns how many runs it holds."""
        runs = []
        for path in run_dirs(self.root):
            try:
                runs.append(load_run(path))
            except IntegrityError as exc:
                warnings.warn(f"skipping run {path.name}: {exc}", stacklevel=2)
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM runs")
            con.executemany(f"INSERT INTO runs ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                            [_row_values(r) for r in runs])
            con.execute("COMMIT")
        return len(runs)

    def sync(self) -> None:
        """Add run directories the index lacks (e.g. copied in from a device) and drop rows whose directory is gone."""
        if not self.path.exists() or (self._memory is None and not self._writable()):
            self.rebuild()
            return
        with self._healthy() as con:
            known = {rid for (rid,) in con.execute("SELECT run_id FROM runs")}
        on_disk = {p.name: p for p in run_dirs(self.root)}
        for name in sorted(on_disk.keys() - known):
            try:
                self.upsert(load_run(on_disk[name]))
            except IntegrityError as exc:
                warnings.warn(f"skipping run {name}: {exc}", stacklevel=2)
        gone = known - on_disk.keys()
        if gone:
            with self._healthy() as con:
                con.execute("BEGIN IMMEDIATE")
                con.executemany("DELETE FROM runs WHERE run_id = ?", [(g,) for g in gone])
                con.execute("COMMIT")

    def query(self, *, target: str | None = None, model: str | None = None, commit: str | None = None,
              since: str | None = None) -> list[RunRow]:
        """Runs matching every given filter, oldest first. `commit` matches a prefix; `since` is an ISO date/time."""
        self.sync()
        where, params = [], []
        if target:
            where.append("target = ?")
            params.append(target)
        if model:
            where.append("(',' || models || ',') LIKE ?")
            params.append(f"%,{model},%")
        if commit:
            where.append("commit_sha LIKE ?")
            params.append(f"{commit}%")
        if since:
            where.append("created_utc >= ?")
            params.append(_normalise_since(since))
        sql = f"SELECT {','.join(_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._healthy() as con:
            rows = con.execute(sql + " ORDER BY created_utc, run_id", params).fetchall()
        return [RunRow(r[0], r[1], r[2], r[3], None if r[4] is None else bool(r[4]), r[5],
                       tuple(filter(None, r[6].split(","))), tuple(filter(None, r[7].split(","))), r[8]) for r in rows]


def _normalise_since(since: str) -> str:
    """'2026-11-01' or '2026-11-01T12:00' -> the created_utc string form, so SQL compares strings correctly."""
    try:
        dt = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since '{since}' is not an ISO date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
