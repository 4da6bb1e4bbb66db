"""The results store interface: every reader and writer of runs goes through a ResultStore.

Two implementations, chosen by URI (harness/results/uri.py), as pytest-benchmark chooses its storage
(`--benchmark-storage file://...`): `file://` -- today's run directories plus the SQLite index
(harness/results/files.py) -- and `postgresql://` -- a lab's shared store (harness/results/postgres.py).

A loaded run is a harness.results.store.Run (or a subclass whose arrays and samples come from the store): readers
use `run.doc`, `run.entries`, `run.timings(entry)`, `run.array(kind, entry)` and `run.samples(entry)` only, never
a path, so they work on either store unchanged.
"""

from __future__ import annotations

import abc
import re
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from harness.errors import UnknownIdError, UsageError
from harness.results.index import RunRow
from harness.results.store import Run, RunWriter

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def warn_if_future(row: RunRow, why: str | None = None) -> None:
    """One warning when a run the store's order chose is dated ahead of the clock that recorded it."""
    if row.future:
        why = why or f"it is the newest of {row.target} because the store recorded it last, not by its date"
        warnings.warn(f"run {row.run_id} is dated {row.created_utc}, ahead of the clock that recorded it "
                      f"({row.recorded_utc or 'now'}): {why}", stacklevel=3)


class ResultStore(abc.ABC):
    """Create runs, append samples and write arrays/run.json (through the returned writer), load runs, query."""

    #: the store's URI, with any password removed (safe to print and to record in a report)
    uri: str

    @abc.abstractmethod
    def create(self, meta: Mapping[str, Any], run_id: str | None = None) -> RunWriter:
        """A new run (status 'partial'); the writer appends samples, writes arrays and run.json."""

    @abc.abstractmethod
    def open_existing(self, run_id: str) -> RunWriter:
        """Reopen a partial run to resume it."""

    @abc.abstractmethod
    def query(self, *, target: str | None = None, model: str | None = None, commit: str | None = None,
              since: str | None = None, status: str | None = None) -> list[RunRow]:
        """Runs matching every given filter, oldest first (`commit` is a prefix, `since` an ISO date/time)."""

    @abc.abstractmethod
    def load_id(self, run_id: str) -> Run:
        """The run with exactly this id; UnknownIdError when the store lacks it."""

    @abc.abstractmethod
    def put(self, run: Run) -> str:
        """Copy a loaded run (from another store) into this one, all or nothing; returns 'added', 'replaced' or
        'unchanged' (the same run.json is already here)."""

    def ids(self) -> list[str]:
        return [r.run_id for r in self.query()]

    def resolve(self, ref: str) -> str:
        """A run id given exactly or as a unique prefix (UsageError when ambiguous, UnknownIdError when absent)."""
        ids = self.ids()
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"run '{ref}' is ambiguous in {self.uri}: {', '.join(matches[:5])}")
        raise UnknownIdError(f"run in {self.uri}", ref, ids[-10:])

    def load(self, ref: str) -> Run:
        """A run by id or unique id prefix."""
        return self.load_id(self.resolve(ref))

    def newest(self, target: str, *, status: str = "complete") -> Run:
        """The newest run of `target` with this status (UsageError when there is none): the one the store recorded
        last (its sequence), never the one with the latest date of its own; a run dated ahead of the clock that
        recorded it is named in a warning (harness/results/index.py, "Order")."""
        rows = self.query(target=target, status=status)
        if not rows:
            raise UsageError(f"no {status} run for target '{target}' in {self.uri}")
        warn_if_future(rows[-1])
        return self.load_id(rows[-1].run_id)

    def targets(self) -> list[str]:
        return sorted({r.target for r in self.query()})

    def __iter__(self) -> Iterator[Run]:
        for row in self.query():
            yield self.load_id(row.run_id)

    def close(self) -> None:
        """Release connections; the store object is not used after this."""

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
