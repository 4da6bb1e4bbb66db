"""SQLite index of the runs under a results root (results/index.sqlite), for fast `bench runs` queries.

The run directories are the truth; the index is a cache. It is rebuilt from them when missing or corrupt, and
synced on every query (new directories added, vanished ones dropped). WAL journaling plus a busy timeout let two
`bench run` processes finishing at the same time both record their runs.

A results folder the process cannot write (a read-only mount of a device's results, another user's folder) is still
listed: the index is then built in memory from the run directories for this command, with one warning, and nothing
is written there. Reading never creates the results folder.

Order (issue 17, item 12): a run's `created_utc` is the clock of whatever made it (a board without a real-time
clock, a host whose clock jumped) and is never used to order runs. The index gives each run, when it first records
it, a sequence number (`seq`: max + 1 under the write lock, kept when the run is updated) and this host's time
(`recorded_utc`). Runs are listed, and "newest" is chosen, by `seq`; `--since` compares the run's *effective*
time, min(created_utc, recorded_utc): no run was made after the store first saw it, so a run dated in the future
counts from when it arrived and leaves a `--since 30d` window 30 days later like any other. A run dated more than
CLOCK_TOLERANCE ahead of the clock that recorded it (or of this host's clock now) is flagged `future`. A rebuilt
index (missing, corrupt, or written by an older harness) re-derives both from the run directories: recorded_utc
is the ctime of run.json (this host's clock when the file last changed here, which no copy tool can set), seq the
order of (effective time, then the ctime's nanoseconds, then run id).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness.errors import IntegrityError, UsageError
from harness.names import shown
from harness.results.store import Run, existing_results_dir, load_run, run_dirs

INDEX_NAME = "index.sqlite"
BUSY_TIMEOUT_MS = 30_000  # a writer holds the lock for milliseconds; 30 s only bites if something is truly stuck

CLOCK_TOLERANCE = timedelta(minutes=5)  # NTP-synchronised clocks agree far better; a board without RTC is years off
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_COLUMNS = ("run_id", "target", "created_utc", "commit_sha", "dirty", "status", "models", "variants", "path")
_ORDER = ("seq", "recorded_utc")  # assigned by the index, never taken from the run
_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, target TEXT NOT NULL, created_utc TEXT NOT NULL, commit_sha TEXT, dirty INTEGER,
    status TEXT NOT NULL, models TEXT NOT NULL, variants TEXT NOT NULL, path TEXT NOT NULL,
    seq INTEGER NOT NULL UNIQUE, recorded_utc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_target ON runs(target, seq);
"""


def utc_text(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def _parse_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def dated_ahead(created_utc: str | None, recorded_utc: str | None, now: datetime | None = None) -> bool:
    """Whether a run's own date is more than CLOCK_TOLERANCE ahead of the clock that recorded it, or of now."""
    created = _parse_utc(created_utc)
    if created is None:
        return False
    clocks = [c for c in (_parse_utc(recorded_utc), now or datetime.now(timezone.utc)) if c is not None]
    return created > min(clocks) + CLOCK_TOLERANCE


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
    seq: int | None = None            # the store's order of first recording (module docstring)
    recorded_utc: str | None = None   # the store's clock when it first recorded the run

    @property
    def future(self) -> bool:
        """Dated ahead of the clock that recorded it (or of this host's clock): flagged, never ordered by its date."""
        return dated_ahead(self.created_utc, self.recorded_utc)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "models": list(self.models), "variants": list(self.variants), "future": self.future}


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
                cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
                if cols and "seq" not in cols:  # an index of an older harness: a cache, so rebuilt with the order
                    con.execute("DROP TABLE runs")
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
        """Record (or refresh) one run; safe against concurrent writers (BEGIN IMMEDIATE waits on the lock). A new
        run gets the next seq and this host's time; a known one keeps both."""
        values = _row_values(run)
        with self._healthy() as con:
            con.execute("BEGIN IMMEDIATE")
            sets = ",".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
            con.execute(f"INSERT INTO runs ({','.join(_COLUMNS + _ORDER)}) "
                        f"VALUES ({','.join('?' * len(_COLUMNS))}, (SELECT COALESCE(MAX(seq), 0) + 1 FROM runs), ?) "
                        f"ON CONFLICT(run_id) DO UPDATE SET {sets}",
                        (*values, utc_text(datetime.now(timezone.utc))))
            con.execute("COMMIT")

    def rebuild(self) -> int:
        """Re-create the index from every loadable run directory; returns how many runs it holds. The order is
        re-derived (module docstring): recorded_utc from run.json's ctime, seq by (effective time, ctime, run id)."""
        runs = []
        for path in run_dirs(self.root):
            try:
                run = load_run(path)
                seen_ns = (path / "run.json").stat().st_ctime_ns
            except (IntegrityError, OSError) as exc:
                warnings.warn(f"skipping run {path.name}: {exc}", stacklevel=2)
                continue
            recorded = utc_text(datetime.fromtimestamp(seen_ns / 1e9, timezone.utc))
            # Times are kept to the second; runs seen within one second are ordered by the ctime's nanoseconds
            # (this host's order), and only then by run id.
            runs.append((min(run.doc["created_utc"], recorded), seen_ns, run.run_id, run, recorded))
        runs.sort(key=lambda t: t[:3])
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM runs")
            con.executemany(f"INSERT INTO runs ({','.join(_COLUMNS + _ORDER)}) "
                            f"VALUES ({','.join('?' * (len(_COLUMNS) + len(_ORDER)))})",
                            [(*_row_values(run), seq, recorded) for seq, (*_, run, recorded) in enumerate(runs, 1)])
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
        """Runs matching every given filter, in the order the index recorded them (seq, oldest first). `commit`
        matches a prefix; `since` is an ISO date/time compared with the effective time (module docstring)."""
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
            where.append("MIN(created_utc, recorded_utc) >= ?")
            params.append(_normalise_since(since))
        sql = f"SELECT {','.join(_COLUMNS + _ORDER)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._healthy() as con:
            rows = con.execute(sql + " ORDER BY seq", params).fetchall()
        return [RunRow(r[0], r[1], r[2], r[3], None if r[4] is None else bool(r[4]), r[5],
                       tuple(filter(None, r[6].split(","))), tuple(filter(None, r[7].split(","))), r[8], r[9], r[10])
                for r in rows]


def _normalise_since(since: str) -> str:
    """'2026-11-01' or '2026-11-01T12:00' -> the created_utc string form, so SQL compares strings correctly."""
    try:
        dt = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since '{since}' is not an ISO date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
