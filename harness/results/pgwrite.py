"""`bench run --store postgresql://...`: a run written through the lab's PostgreSQL store entry by entry (issue 19).

The run directory under the results root stays the crash-safe buffer (harness/results/store.py: samples appended
and fsynced, arrays and run.json replaced atomically): a board that loses its network or power keeps every sample.
Whenever the orchestrator writes run.json, StoreRunWriter sends the store only what changed since its last
successful write, each piece in its own transaction under the run's advisory lock (the lock `put` takes too):

- an entry (keyed by run_id and entry): its document (efb_run_entries), its table rows (rows.entry_rows: entries,
  speed, rates, the identification tables, search speed; efb_entries' ON DELETE CASCADE takes the old ones) and its
  files (samples/<entry>.jsonl, timings/<entry>.npy, embeddings/<entry>.npy in efb_files). The entry's old rows
  and files are deleted first, so writing an entry again replaces it: idempotent, never doubled;
- the run's header (run.json without its entries, in efb_runs.doc with `entries: []`), its environment rows and
  the run's other files (pipeline/<model>.jsonl), when they change; and its status. A complete run's header is
  written after every entry, so no reader sees a complete run with an entry missing; then the entries are folded
  into efb_runs.doc on the server (the form `bench store push` writes) and its headline summary stored.

What is "changed" is a sha256 over the entry's canonical JSON, its position and its files' sha256s, stored in
efb_run_entries.sha256: a resumed writer (on this host or another) skips the entries the store already has.
Readers see a partial run's document assembled from efb_runs.doc and efb_run_entries (postgres.DOC_SQL).

The same outage rules as before (docs/results.md): a partial run whose write fails warns once and continues
locally, the next run.json write retries everything missing; a complete run that cannot be written raises,
naming the local folder and the `bench store push` command. Concurrency: runs are keyed by their unique run id,
every write of a run holds pg_advisory_xact_lock(hashtext(run_id)), and writes of different runs touch disjoint
rows, so hosts writing at once never wait on each other (a hash collision only serialises two runs' writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import IntegrityError, UnavailableError
from harness.names import id_problem, safe_id, shown
from harness.results.index import _git
from harness.results.rows import COLUMNS, entry_rows, environment_rows
from harness.results.store import ARRAY_KINDS, RUN_JSON, SAMPLES_DIR, RunWriter

ENTRY_DIRS = (SAMPLES_DIR, *ARRAY_KINDS)  # the folders whose files belong to one entry each


def entry_paths(entry: str) -> list[str]:
    """The run-relative paths of an entry's files (whether or not they exist)."""
    return [f"{SAMPLES_DIR}/{entry}.jsonl", *(f"{kind}/{entry}.npy" for kind in ARRAY_KINDS)]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass
class WriteStats:
    """What the writer sent (for tools/store_write_cost.py and the tests): transactions, bytes of documents and
    files, entries written."""

    transactions: int = 0
    doc_bytes: int = 0
    file_bytes: int = 0
    entries_written: list[str] = field(default_factory=list)


@dataclass
class StoreRunWriter(RunWriter):
    """A local RunWriter (the spool) that writes each changed entry and the run's header through to PostgreSQL."""

    store: Any = field(default=None, repr=False)  # PostgresStore
    _sent: dict[str, str] = field(default_factory=dict, repr=False)  # entry id or HEADER -> sha256 in the store
    _hashes: dict[str, tuple[tuple[int, int], str]] = field(default_factory=dict, repr=False)
    _away: bool = field(default=False, repr=False)
    _nul_warned: bool = field(default=False, repr=False)
    stats: WriteStats = field(default_factory=WriteStats, repr=False)

    HEADER = "\x00header"  # not a safe entry id, so never an entry's key

    def write_run_json(self, doc: Mapping[str, Any]) -> Path:
        path = super().write_run_json(doc)
        self.write_through(complete=doc.get("status") == "complete")
        return path

    def write_through(self, *, complete: bool) -> None:
        """Send what changed. A partial run that cannot be written warns once per outage (the benchmark goes on,
        the next write retries); a complete one raises, naming the local folder to push later."""
        self.sync()
        try:  # run.json as just written (validated by write_run_json: not validated again)
            self._flush(json.loads((self.path / RUN_JSON).read_text(encoding="utf-8")))
        except UnavailableError as exc:
            if complete:
                raise UnavailableError(f"{exc}. The run is complete in {self.path}: push it later with "
                                       f"bench store push {self.path} --store {self.store.uri}") from None
            if not self._away:
                warnings.warn(f"{exc}; the run continues locally in {self.path} and the next entry write retries "
                              "what the store is missing", stacklevel=3)
            self._away = True
            return
        self._away = False

    # -- what changed ------------------------------------------------------------------------------------------
    def _file_sha(self, rel: str) -> tuple[str, int] | None:
        """sha256 and size of a run file, None when it does not exist (cached by size and mtime)."""
        p = self.path / rel
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        key = (st.st_size, st.st_mtime_ns)
        cached = self._hashes.get(rel)
        if cached is None or cached[0] != key:
            cached = self._hashes[rel] = (key, hashlib.sha256(p.read_bytes()).hexdigest())
        return cached[1], st.st_size

    def _run_level_files(self) -> list[str]:
        """Run-relative paths of the run's files that belong to no entry (as postgres.run_files filters them)."""
        from harness.results.postgres import run_file_paths

        return [rel for rel in run_file_paths(self.path) if rel.split("/", 1)[0] not in ENTRY_DIRS]

    def _flush(self, doc: dict[str, Any]) -> None:
        from harness.results.postgres import escape_nul, canonical_sha256, NUL_ESCAPE

        found: list[str] = []
        doc = escape_nul(doc, "", found)
        if found and not self._nul_warned:
            self._nul_warned = True
            warnings.warn(f"run {self.run_id}: NUL characters written as {NUL_ESCAPE} (PostgreSQL text cannot hold "
                          f"them) in {', '.join(found[:3])}", stacklevel=4)
        doc_sha = canonical_sha256(doc)
        entries = doc.get("entries", [])
        header = {k: v for k, v in doc.items() if k != "entries"} | {"entries": []}
        run_files = {rel: self._file_sha(rel) for rel in self._run_level_files()}
        header_key = hashlib.sha256(_canonical([header, {r: s[0] for r, s in run_files.items() if s}])).hexdigest()
        complete = doc.get("status") == "complete"
        if self.HEADER not in self._sent:  # the run row first: every entry row references it
            self._write_header(doc, header, header_key, run_files, doc_sha, final=False)
        for position, e in enumerate(entries):
            eid = safe_id("entry id", e["entry"])
            files = {rel: self._file_sha(rel) for rel in entry_paths(eid)}
            key = hashlib.sha256(_canonical([position, e, {r: s[0] for r, s in files.items() if s}])).hexdigest()
            if self._sent.get(eid) != key:
                self._write_entry(doc["run_id"], position, e, key, files, doc_sha)
        if self._sent.get(self.HEADER) != header_key or complete:
            self._write_header(doc, header, header_key, run_files, doc_sha, final=complete)

    # -- transactions ------------------------------------------------------------------------------------------
    def _transaction(self, what: str, work) -> None:
        """Run work(con) in one transaction under the run's advisory lock, with the store's timeouts."""
        from harness.results.postgres import _first_line, _psycopg

        psycopg = _psycopg()
        store = self.store
        con = store._connection()
        try:
            with store._deadline(con, f"while writing {what} of {self.run_id}; it is written again with the next "
                                      "entry"), con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.run_id,))
                work(con)
        except psycopg.OperationalError as exc:
            store._drop()
            raise UnavailableError(f"{store.uri}: the PostgreSQL server went away while writing {what} of "
                                   f"{self.run_id} ({_first_line(exc)}); nothing of it was committed") from None
        except psycopg.DataError as exc:  # a value the tables cannot hold: the run's fault, not the server's
            raise IntegrityError(f"{store.uri}: run {self.run_id} {what} cannot be stored "
                                 f"({_first_line(exc)})") from None
        self.stats.transactions += 1

    def _files_rows(self, rid: str, files: Mapping[str, tuple[str, int] | None]) -> list[tuple]:
        rows = []
        for rel, have in files.items():
            if have is None:
                continue
            data = (self.path / rel).read_bytes()
            sha = hashlib.sha256(data).hexdigest()  # of the bytes sent (the file may have grown since it was hashed)
            rows.append((rid, rel, len(data), sha, data))
            self.stats.file_bytes += len(data)
        return rows

    def _write_entry(self, rid: str, position: int, e: Mapping[str, Any], key: str,
                     files: Mapping[str, tuple[str, int] | None], doc_sha: str) -> None:
        from psycopg.types.json import Jsonb

        from harness.results.postgres import PostgresStore

        eid = e["entry"]
        text = _canonical(e)
        self.stats.doc_bytes += len(text)

        def work(con) -> None:
            con.execute("DELETE FROM efb_entries WHERE run_id = %s AND entry = %s", (rid, eid))  # cascades
            con.execute("DELETE FROM efb_files WHERE run_id = %s AND path = ANY(%s)", (rid, entry_paths(eid)))
            con.execute("INSERT INTO efb_run_entries (run_id, entry, position, doc, sha256, written_from) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, entry) DO UPDATE SET "
                        "position = EXCLUDED.position, doc = EXCLUDED.doc, sha256 = EXCLUDED.sha256, "
                        "written_from = EXCLUDED.written_from, written_utc = now()",
                        (rid, eid, position, Jsonb(e), key, socket.gethostname()))
            with con.cursor() as cur:
                for table, rows in entry_rows(rid, e).items():
                    PostgresStore._copy(cur, f"efb_{table}", COLUMNS[table], rows)
                PostgresStore._copy(cur, "efb_files", ("run_id", "path", "size", "sha256", "data"),
                                    self._files_rows(rid, files))
            con.execute("UPDATE efb_runs SET doc_sha256 = %s, pushed_from = %s, pushed_utc = now(), "
                        "models = ARRAY(SELECT DISTINCT model FROM efb_entries WHERE run_id = %s ORDER BY 1), "
                        "variants = ARRAY(SELECT DISTINCT variant FROM efb_entries WHERE run_id = %s ORDER BY 1) "
                        "WHERE run_id = %s", (doc_sha, socket.gethostname(), rid, rid, rid))

        self._transaction(f"entry {eid}", work)
        self._sent[eid] = key
        self.stats.entries_written.append(eid)

    def _write_header(self, doc: Mapping[str, Any], header: Mapping[str, Any], header_key: str,
                      run_files: Mapping[str, tuple[str, int] | None], doc_sha: str, *, final: bool) -> None:
        """The run row (created or updated: a run keeps its seq and recorded_utc), its environment rows, its
        run-level files, and entries no longer in the document removed; `final` folds the entries into the run's
        document and stores its headline (see the module docstring)."""
        from psycopg.types.json import Jsonb

        from harness.results.headline import headline_doc
        from harness.results.postgres import PostgresStore, _utc

        rid = doc["run_id"]
        commit, dirty = _git(doc.get("environment") or {})
        ids = [e["entry"] for e in doc.get("entries", [])]
        self.stats.doc_bytes += len(_canonical(header))
        sent_files = [rel for rel in run_files if self._sent.get(f"file:{rel}") != (run_files[rel] or ("",))[0]]

        def work(con) -> None:
            con.execute(
                "INSERT INTO efb_runs (run_id, target, created_utc, finished_utc, status, commit_sha, dirty, models, "
                "variants, schema_version, doc, doc_sha256, pushed_from) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
                "target = EXCLUDED.target, created_utc = EXCLUDED.created_utc, finished_utc = EXCLUDED.finished_utc, "
                "status = EXCLUDED.status, commit_sha = EXCLUDED.commit_sha, dirty = EXCLUDED.dirty, "
                "schema_version = EXCLUDED.schema_version, doc = EXCLUDED.doc, doc_sha256 = EXCLUDED.doc_sha256, "
                "pushed_from = EXCLUDED.pushed_from, pushed_utc = now(), headline = NULL",
                (rid, doc["target"]["id"], _utc(doc["created_utc"]), _utc(doc.get("finished_utc")), doc["status"],
                 commit, dirty, sorted({e["model"] for e in doc.get("entries", [])}),
                 sorted({e["variant"] for e in doc.get("entries", [])}), doc["schema_version"], Jsonb(header),
                 doc_sha, socket.gethostname()))
            con.execute("DELETE FROM efb_entries WHERE run_id = %s AND NOT entry = ANY(%s)", (rid, ids))
            con.execute("DELETE FROM efb_run_entries WHERE run_id = %s AND NOT entry = ANY(%s)", (rid, ids))
            con.execute("DELETE FROM efb_environment WHERE run_id = %s", (rid,))
            con.execute("DELETE FROM efb_files WHERE run_id = %s AND path = ANY(%s)", (rid, sent_files))
            with con.cursor() as cur:
                PostgresStore._copy(cur, "efb_environment", COLUMNS["environment"], environment_rows(doc))
                PostgresStore._copy(cur, "efb_files", ("run_id", "path", "size", "sha256", "data"),
                                    self._files_rows(rid, {rel: run_files[rel] for rel in sent_files}))
            if final:
                n = con.execute("SELECT count(*) FROM efb_run_entries WHERE run_id = %s", (rid,)).fetchone()[0]
                if n != len(ids):  # every entry was written just before: anything else is a bug, not an outage
                    raise IntegrityError(f"{self.store.uri}: run {rid} has {n} of its {len(ids)} entries stored; "
                                         f"push it with bench store push {self.path}")
                con.execute("UPDATE efb_runs SET doc = doc || jsonb_build_object('entries', coalesce((SELECT "
                            "jsonb_agg(doc ORDER BY position) FROM efb_run_entries WHERE run_id = %s), '[]')), "
                            "headline = %s WHERE run_id = %s", (rid, Jsonb(headline_doc(dict(doc))), rid))
                con.execute("DELETE FROM efb_run_entries WHERE run_id = %s", (rid,))

        self._transaction("the run header" if not final else "the complete run", work)
        self._sent[self.HEADER] = header_key
        for rel in sent_files:
            self._sent[f"file:{rel}"] = (run_files[rel] or ("",))[0]
        if final:  # the entries now live in the run's document: a later write starts over (e.g. a rescore)
            for eid in ids:
                self._sent.pop(eid, None)

    def adopt(self, stored: Mapping[str, str]) -> None:
        """Entries the store already has (entry id -> sha256 key), so a resumed writer does not send them again."""
        self._sent.update({k: v for k, v in stored.items() if k != self.HEADER})
        self._sent[self.HEADER] = ""  # the run row exists; its header is compared, not assumed


def materialize(store, run_id: str, dest: Path) -> None:
    """Recreate a run directory (run.json and every stored file) under `dest` from the store, for `bench run
    --resume RUN --store URI` on a host that lacks the run's local folder. Stored paths are the store's data:
    each part must be a safe name, else IntegrityError."""
    from harness.files import atomic_write_bytes

    run = store.load_id(run_id)
    with store._read() as con:
        rows = con.execute("SELECT path FROM efb_files WHERE run_id = %s ORDER BY path", (run_id,)).fetchall()
    path = dest / safe_id("run id", run_id)
    tmp = dest / f".{run_id}.materialize"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for (rel,) in rows:
            parts = rel.split("/")
            problems = [p for p in (id_problem(part) for part in parts) if p]
            if problems:  # the store's data, never a path to follow
                raise IntegrityError(f"{store.uri}#{run_id}: stored file {shown(repr(rel))} is not a safe run path "
                                     f"({problems[0]})")
            target = tmp.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, store.file(run_id, rel))
        atomic_write_bytes(tmp / RUN_JSON, json.dumps(run.doc, indent=1, ensure_ascii=False).encode("utf-8"))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
