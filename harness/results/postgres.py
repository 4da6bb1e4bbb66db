"""`postgresql://` store: a lab's runs in one PostgreSQL database that several hosts and CI jobs write at once.

Client: psycopg 3 (the `store` extra). Plain SQL through psycopg rather than an ORM: the tables are few, written
with COPY in one transaction per run, and SQLAlchemy would add a second layer to learn for no query we need.

Tables (all prefixed `efb_`; schema in _DDL, documented in docs/results.md "PostgreSQL store"):
- efb_runs: one row per run -- id, target, times, status, commit, models/variants arrays, and the whole upgraded
  run.json as jsonb (`doc`) so a run read back is the run that was pushed (sha256 of its canonical JSON kept).
- efb_entries, efb_speed, efb_rates, efb_environment: what a lab queries with SQL (entry status and backend,
  latency/throughput/energy/init/peak memory, every per-group rate row with its interval and counts, the
  environment fingerprint as dotted key -> jsonb value).
- efb_identification, efb_identification_gallery_size, efb_identification_flips,
  efb_identification_false_candidates (store schema 2): the 1:N watchlist rows (harness/results/rows.py).
- efb_search_speed (store schema 3): the watchlist search's latency timed on the board, per entry, dataset and
  gallery size (rows.search_speed_records).
- efb_speed's energy columns (store schema 6): the gross energy's interval and the energy above idle beside it
  (idle power, net power and net energy per inference with their intervals, why one is missing; rows.energy_record).
- efb_files: the run directory's other files byte for byte (samples/*.jsonl, timings/*.npy, embeddings/*.npy,
  pipeline-sensitivity samples), with size and sha256 (checked on read). bytea values are TOASTed (stored out of
  line, pglz-compressed when that helps), so queries over the tables above never read them.

Order (issue 17, item 12; as the SQLite index, harness/results/index.py): `seq` (an identity column) and
`recorded_utc` (the server's now()) are given when the store first receives a run and kept when it is replaced;
runs are listed and "newest" chosen by seq, `--since` compares min(created_utc, recorded_utc), and a run dated
ahead of the server's clock is flagged `future`. A store made by an older harness gains both columns in place
(recorded_utc from pushed_utc).

Writes: a run is pushed in ONE transaction (advisory lock on its id, delete + COPY), so a reader sees all of a run
or none of it; a server that goes away mid-push leaves nothing (the run stays in its local folder; push again).
`create()` and `open_existing()` (`bench run --store postgresql://...`) write through a local run directory under
the results root (a device that loses its network or power keeps every sample) and send each finished entry in its
own transaction, never the whole run per entry (harness/results/pgwrite.py); a complete run that cannot be written
says how to recover.

Timeouts (issue 17, item 8): a frozen server (SIGSTOPped, or a host that stopped answering with its kernel still
ACKing) must not hang a push forever. One setting, `$BENCH_STORE_TIMEOUT` (seconds, default 60), bounds it in four
layers: libpq `connect_timeout` (default 10 s) for the connection; TCP keepalives (idle 30 s, interval 10 s, 3
probes) and `tcp_user_timeout` for a peer that vanished; the server-side `statement_timeout` and `lock_timeout`
(sent in the start-up `options`, so a URI's own `?options=-c...` still wins); and a client-side watchdog that shuts
the socket when one transaction (a push, a query) takes longer, which is the only layer that works when the
server's process is stopped but its kernel still answers. Any of them is one line, exit 3; a push is all or
nothing, so it is pushed again once the server answers. Values given in the URI (`connect_timeout`, `keepalives*`,
`tcp_user_timeout`) are kept.

Text (issue 17, item 8): PostgreSQL text and jsonb cannot hold U+0000. A run.json string with a NUL (a board's
reason, a name read from a file) is pushed with each NUL escaped as the six characters `\\u0000`, and a warning
names the run and the fields; the local run.json is left as it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import logging
import socket
import tempfile
import threading
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import IntegrityError, UnavailableError, UnknownIdError, UsageError
from harness.results.base import ResultStore
from harness.results.files import FileStore
from harness.results.index import RunRow, _git, _normalise_since
from harness.results.rows import COLUMNS, rows_for
from harness.results.store import ARRAY_KINDS, RUN_JSON, Run, RunWriter, read_jsonl
from harness.results.uri import redact

# 1: runs, entries, speed, rates, environment, files. 2: + the four identification tables, which a store at 1 gains
# when a harness at 2 first connects, filled from the runs it holds (_migrate_identification). 3: + efb_search_speed,
# filled the same way from each stored entry's speed.search (_migrate_search_speed). 4: + efb_run_entries, the
# entries of a run being written through the store (harness/results/pgwrite.py); nothing to migrate, but a harness
# at 3 would read such a run without its entries, so it is refused. 5: efb_search_speed gains precision,
# gallery_bytes and rss_growth_mb (the gallery-size sweep in the storage precision), added in place and the table
# refilled from the stored runs (_SEARCH_SPEED_5 then _migrate_search_speed). 6: efb_speed gains the energy above
# idle (rows.ENERGY_COLS), added in place and filled from each stored entry's speed.energy_above_idle (_SPEED_6 then
# _migrate_energy).
STORE_SCHEMA = 6
_LOCK_SCHEMA = 0x45464231  # advisory lock key for schema creation ("EFB1")
_SKIP_DIRS = {"work"}  # scratch of a running benchmark, removed when it completes
ENV_TIMEOUT = "BENCH_STORE_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
_CONNECT_TIMEOUT_S = 10
_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}
NUL_ESCAPE = "\\u0000"

# psycopg logs a failed query cancellation (Ctrl-C against a frozen server) at WARNING; with no handler Python's
# last-resort handler would print it raw. The store's own messages say what happened.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

_DDL = """
CREATE TABLE IF NOT EXISTS efb_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS efb_runs (
    run_id text PRIMARY KEY, target text NOT NULL, created_utc timestamptz NOT NULL, finished_utc timestamptz,
    status text NOT NULL, commit_sha text, dirty boolean, models text[] NOT NULL, variants text[] NOT NULL,
    schema_version integer NOT NULL, doc jsonb NOT NULL, doc_sha256 text NOT NULL,
    pushed_from text, pushed_utc timestamptz NOT NULL DEFAULT now(),
    seq bigint GENERATED BY DEFAULT AS IDENTITY UNIQUE, recorded_utc timestamptz NOT NULL DEFAULT now(),
    headline jsonb
);
CREATE INDEX IF NOT EXISTS efb_runs_target ON efb_runs (target, created_utc);
CREATE TABLE IF NOT EXISTS efb_entries (
    run_id text NOT NULL REFERENCES efb_runs ON DELETE CASCADE, entry text NOT NULL, model text NOT NULL,
    variant text NOT NULL, task text, status text NOT NULL, reason text, model_sha256 text, runtime text,
    provider_requested text, providers_active text[], PRIMARY KEY (run_id, entry)
);
CREATE TABLE IF NOT EXISTS efb_speed (
    run_id text NOT NULL, entry text NOT NULL, init_ms double precision, first_inference_ms double precision,
    count integer, p50_ms double precision, p90_ms double precision, p99_ms double precision,
    mean_ms double precision, throughput_ips double precision, energy_mj double precision,
    rss_peak_mb double precision, validity text, validity_reasons text[],
    energy_ci_lo_mj double precision, energy_ci_hi_mj double precision, idle_mw double precision,
    idle_readings integer, net_mw double precision, net_ci_lo_mw double precision, net_ci_hi_mw double precision,
    net_energy_mj double precision, net_energy_ci_lo_mj double precision, net_energy_ci_hi_mj double precision,
    net_energy_reason text,
    PRIMARY KEY (run_id, entry), FOREIGN KEY (run_id, entry) REFERENCES efb_entries ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS efb_rates (
    run_id text NOT NULL, entry text NOT NULL, dataset text, metric text NOT NULL, group_by text NOT NULL,
    grp text NOT NULL, threshold_kind text, threshold double precision, value double precision,
    ci_lo double precision, ci_hi double precision, n integer, k double precision, n_subjects integer,
    small boolean, unit text, ci_method text, status text, reason text,
    FOREIGN KEY (run_id, entry) REFERENCES efb_entries ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS efb_rates_run ON efb_rates (run_id, entry, metric);
CREATE TABLE IF NOT EXISTS efb_environment (
    run_id text NOT NULL REFERENCES efb_runs ON DELETE CASCADE, key text NOT NULL, value jsonb,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS efb_identification (
    run_id text NOT NULL, entry text NOT NULL, dataset text NOT NULL, config text NOT NULL, metric text NOT NULL,
    group_by text, grp text NOT NULL, threshold_kind text, threshold double precision, rank integer,
    value double precision, ci_lo double precision, ci_hi double precision, n integer, k integer, n_subjects integer,
    search_value double precision, small boolean, unit text, ci_method text, status text, reason text,
    n_gallery integer, n_distractors integer,
    FOREIGN KEY (run_id, entry) REFERENCES efb_entries ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS efb_identification_run ON efb_identification (run_id, entry, metric);
CREATE TABLE IF NOT EXISTS efb_identification_gallery_size (
    run_id text NOT NULL, entry text NOT NULL, dataset text NOT NULL, config text NOT NULL, kind text NOT NULL,
    gallery_size bigint NOT NULL, metric text NOT NULL, group_by text, grp text NOT NULL, threshold_kind text,
    threshold double precision, value double precision, ci_lo double precision, ci_hi double precision, n integer,
    k integer, n_subjects integer, small boolean, ci_method text, n_comparisons bigint, k_comparisons bigint,
    p_t double precision,
    FOREIGN KEY (run_id, entry) REFERENCES efb_entries ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS efb_identification_gallery_size_run ON efb_identification_gallery_size (run_id, entry);
CREATE TABLE IF NOT EXISTS efb_identification_flips (
    run_id text NOT NULL, entry text NOT NULL, dataset text NOT NULL, config text NOT NULL, metric text NOT NULL,
    group_by text, grp text NOT NULL, threshold_kind text, threshold double precision, n integer, flips integer,
    b integer, c integer, p_value double precision, reference_entry text, reference_run text,
    FOREIGN KEY (run_id, entry) REFERENCES efb_entries ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS efb_identification_flips_run ON efb_identification_flips (run_id, entry);
CREATE TABLE IF NOT EXISTS efb_identification_false_candidates (
    run_id text NOT NULL, entry text NOT NULL, dataset text NOT NULL, config text NOT NULL, threshold_kind text,
    threshold double precision, probe_group text NOT NULL, candidate_group text NOT NULL, n_false integer,
    n_searches integer,
    FOREIGN KEY (run_id, entry) REFERENCES efb_entries ON DELETE CASCADE
);
-- an entry written again (harness/results/pgwrite.py) cascades its delete here: by index, not a table scan
CREATE INDEX IF NOT EXISTS efb_identification_false_candidates_run ON efb_identification_false_candidates (run_id, entry);
CREATE TABLE IF NOT EXISTS efb_search_speed (
    run_id text NOT NULL, entry text NOT NULL, dataset text NOT NULL, gallery_size bigint, synthetic bigint,
    k integer, dim integer, n_probes integer, count integer, p50_ms double precision, p50_ci_lo_ms double precision,
    p50_ci_hi_ms double precision, p90_ms double precision, p99_ms double precision, validity text,
    validity_reasons text[], topk_agree integer, topk_probes integer, blas_threads_requested text,
    blas_threads_used text, status text, reason text, precision text, gallery_bytes bigint,
    rss_growth_mb double precision,
    FOREIGN KEY (run_id, entry) REFERENCES efb_entries ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS efb_search_speed_run ON efb_search_speed (run_id, entry);
CREATE TABLE IF NOT EXISTS efb_run_entries (
    run_id text NOT NULL REFERENCES efb_runs ON DELETE CASCADE, entry text NOT NULL, position integer NOT NULL,
    doc jsonb NOT NULL, sha256 text NOT NULL, written_from text, written_utc timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, entry)
);
CREATE TABLE IF NOT EXISTS efb_files (
    run_id text NOT NULL REFERENCES efb_runs ON DELETE CASCADE, path text NOT NULL, size bigint NOT NULL,
    sha256 text NOT NULL, data bytea NOT NULL, PRIMARY KEY (run_id, path)
);
"""
# Store schema 3 -> 4: the columns efb_search_speed gained (a store made at 4 has them from _DDL).
_SEARCH_SPEED_5 = ("ALTER TABLE efb_search_speed ADD COLUMN IF NOT EXISTS precision text, "
                   "ADD COLUMN IF NOT EXISTS gallery_bytes bigint, "
                   "ADD COLUMN IF NOT EXISTS rss_growth_mb double precision")
# Store schema 5 -> 6: the energy columns efb_speed gained (a store made at 6 has them from _DDL).
_SPEED_6 = ("ALTER TABLE efb_speed ADD COLUMN IF NOT EXISTS energy_ci_lo_mj double precision, "
            "ADD COLUMN IF NOT EXISTS energy_ci_hi_mj double precision, "
            "ADD COLUMN IF NOT EXISTS idle_mw double precision, ADD COLUMN IF NOT EXISTS idle_readings integer, "
            "ADD COLUMN IF NOT EXISTS net_mw double precision, ADD COLUMN IF NOT EXISTS net_ci_lo_mw double precision, "
            "ADD COLUMN IF NOT EXISTS net_ci_hi_mw double precision, "
            "ADD COLUMN IF NOT EXISTS net_energy_mj double precision, "
            "ADD COLUMN IF NOT EXISTS net_energy_ci_lo_mj double precision, "
            "ADD COLUMN IF NOT EXISTS net_energy_ci_hi_mj double precision, "
            "ADD COLUMN IF NOT EXISTS net_energy_reason text")
# A store made before `seq` existed gains it in place (only then: ALTER TABLE locks the table).
_MIGRATE_ORDER = """
ALTER TABLE efb_runs ADD COLUMN seq bigint GENERATED BY DEFAULT AS IDENTITY UNIQUE;
ALTER TABLE efb_runs ADD COLUMN recorded_utc timestamptz;
UPDATE efb_runs SET recorded_utc = pushed_utc;
ALTER TABLE efb_runs ALTER COLUMN recorded_utc SET NOT NULL, ALTER COLUMN recorded_utc SET DEFAULT now();
"""
# A run's document as readers see it: a run written through the store (pgwrite.py) keeps its finished entries in
# efb_run_entries until it completes; they replace the header's empty `entries`. Other runs: efb_runs.doc as is.
DOC_SQL = ("coalesce((SELECT r.doc || jsonb_build_object('entries', jsonb_agg(x.doc ORDER BY x.position)) "
           "FROM efb_run_entries x WHERE x.run_id = r.run_id HAVING count(*) > 0), r.doc)")
_RUN_COLS = ("run_id", "target", "created_utc", "finished_utc", "status", "commit_sha", "dirty", "models",
             "variants", "schema_version", "doc", "doc_sha256", "pushed_from", "headline")


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise UnavailableError("the postgresql:// store needs psycopg 3: pip install 'edge-fair-bench[store]'") from None
    return psycopg


def canonical_sha256(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def store_timeout() -> float:
    """$BENCH_STORE_TIMEOUT in seconds (default 60); UsageError for a value that is not a positive number."""
    raw = os.environ.get(ENV_TIMEOUT)
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{ENV_TIMEOUT}={raw!r}: must be a number of seconds > 0 (default {DEFAULT_TIMEOUT_S:g})")
    return value


def escape_nul(value: Any, where: str = "", found: list[str] | None = None) -> Any:
    """`value` with every U+0000 in strings and keys replaced by NUL_ESCAPE; the JSON paths changed go to found."""
    if isinstance(value, str):
        if "\x00" in value:
            if found is not None:
                found.append(where or "(top)")
            return value.replace("\x00", NUL_ESCAPE)
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = escape_nul(k, f"{where}.{k!r}" if where else repr(k), found) if isinstance(k, str) else k
            out[key] = escape_nul(v, f"{where}.{key}" if where else str(key), found)
        return out
    if isinstance(value, (list, tuple)):
        return [escape_nul(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def _utc(value: str | None) -> datetime | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _utc_text(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_file_paths(path: Path) -> list[str]:
    """Relative posix paths of every file of a run directory but run.json, scratch, locks and temp files."""
    out = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if (not p.is_file() or rel.as_posix() == RUN_JSON or rel.parts[0] in _SKIP_DIRS
                or any(part.startswith(".") for part in rel.parts) or p.suffix == ".lock"):
            continue
        out.append(rel.as_posix())
    return out


def run_files(path: Path) -> list[tuple[str, bytes]]:
    """(relative posix path, bytes) of every file run_file_paths lists."""
    return [(rel, (path / rel).read_bytes()) for rel in run_file_paths(path)]


class PostgresStore(ResultStore):
    """See the module docstring. `spool` is the local results root a writer keeps its run directory in."""

    def __init__(self, uri: str, *, spool: str | os.PathLike[str]):
        self._conninfo = uri
        self.uri = redact(uri)
        self.spool = FileStore(spool)
        self._con = None
        self.timeout = store_timeout()

    def _connect_params(self) -> dict[str, str]:
        """The connection's timeouts and keepalives, each unless the URI sets it (module docstring)."""
        psycopg = _psycopg()
        try:
            given = psycopg.conninfo.conninfo_to_dict(self._conninfo)
        except psycopg.Error as exc:
            raise UsageError(f"store '{self.uri}': malformed PostgreSQL URI ({_first_line(exc)})") from None
        ms = int(self.timeout * 1000)
        params = {"connect_timeout": str(_CONNECT_TIMEOUT_S), **_KEEPALIVES, "tcp_user_timeout": str(ms)}
        params = {k: v for k, v in params.items() if k not in given}
        params["application_name"] = "edge-fair-bench"
        params["options"] = f"-c statement_timeout={ms} -c lock_timeout={ms} " + str(given.get("options") or "")
        return params

    @contextmanager
    def _deadline(self, con, what: str):
        """Bound one transaction on `con` to self.timeout seconds on the client: past it the socket is shut down,
        which wakes psycopg's wait with an OperationalError that is reported as a timeout naming `what`."""
        psycopg = _psycopg()
        fired = threading.Event()

        def fire() -> None:
            fired.set()
            try:
                sock = socket.socket(fileno=os.dup(con.pgconn.socket))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            except (OSError, psycopg.Error):
                pass  # already closed: psycopg's own error stands

        timer = threading.Timer(self.timeout, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except psycopg.OperationalError as exc:
            self._drop()
            if fired.is_set() or isinstance(exc, psycopg.errors.QueryCanceled):
                raise UnavailableError(f"{self.uri}: the PostgreSQL server did not answer within {self.timeout:g} s "
                                       f"({ENV_TIMEOUT}) {what}") from None
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise UnavailableError(f"{self.uri}: another writer held the lock for more than {self.timeout:g} s "
                                       f"({ENV_TIMEOUT}) {what}") from None
            raise
        finally:
            timer.cancel()
        if fired.is_set():  # it fired as the transaction ended: the connection is shut, the work is done
            self._drop()

    # -- connection -------------------------------------------------------------------------------------------
    def _connection(self):
        if self._con is not None and not self._con.closed:
            return self._con
        psycopg = _psycopg()
        params = self._connect_params()
        try:
            con = psycopg.connect(self._conninfo, **params)
        except psycopg.Error as exc:
            raise UnavailableError(f"{self.uri}: cannot connect to the PostgreSQL server ({_first_line(exc)})") from None
        try:
            with self._deadline(con, "while preparing the store tables"), con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))  # concurrent first writers
                con.execute(_DDL)
                if con.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                               "AND table_name = 'efb_runs' AND column_name = 'seq'").fetchone() is None:
                    con.execute(_MIGRATE_ORDER)
                # a store created before headlines (harness/results/headline.py) gains the column once; ALTER takes
                # an exclusive lock, so it runs only when the column is missing (never under concurrent pushes)
                if con.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'efb_runs' AND "
                               "column_name = 'headline' AND table_schema = current_schema()").fetchone() is None:
                    con.execute("ALTER TABLE efb_runs ADD COLUMN headline jsonb")
                row = con.execute("SELECT value FROM efb_meta WHERE key = 'store_schema'").fetchone()
                version = None if row is None else int(row[0])  # None: a new, empty store
                if version is not None and version > STORE_SCHEMA:
                    raise IntegrityError(f"{self.uri}: store schema {row[0]} is newer than this harness reads "
                                         f"({STORE_SCHEMA}); upgrade edge-fair-bench")
                if version is not None and version < 2:
                    _migrate_identification(con)
                if version is not None and version < 5:
                    con.execute(_SEARCH_SPEED_5)  # no-op below 3: _DDL has just made the table with them
                    _migrate_search_speed(con)
                if version is not None and version < 6:
                    con.execute(_SPEED_6)
                    _migrate_energy(con)
                if version != STORE_SCHEMA:
                    con.execute("INSERT INTO efb_meta VALUES ('store_schema', %s) ON CONFLICT (key) DO UPDATE "
                                "SET value = EXCLUDED.value", (str(STORE_SCHEMA),))
        except psycopg.Error as exc:
            con.close()
            raise UnavailableError(f"{self.uri}: cannot prepare the store tables ({_first_line(exc)})") from None
        except BaseException:
            con.close()
            raise
        self._con = con
        return con

    @contextmanager
    def _read(self):
        psycopg = _psycopg()
        con = self._connection()
        try:
            with self._deadline(con, "to a query"), con.transaction():
                yield con
        except psycopg.OperationalError as exc:
            self._drop()
            raise UnavailableError(f"{self.uri}: the PostgreSQL server went away ({_first_line(exc)})") from None

    def _drop(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except Exception:  # noqa: BLE001 - the connection is already broken; closing is best effort
                pass
        self._con = None

    def close(self) -> None:
        self._drop()

    # -- reading ----------------------------------------------------------------------------------------------
    def query(self, *, target: str | None = None, model: str | None = None, commit: str | None = None,
              since: str | None = None, status: str | None = None) -> list[RunRow]:
        where, params = [], []
        for sql, value in (("target = %s", target), ("%s = ANY(models)", model), ("status = %s", status),
                           ("commit_sha LIKE %s", f"{commit}%" if commit else None),
                           ("LEAST(created_utc, recorded_utc) >= %s", _utc(_normalise_since(since)) if since else None)):
            if value is not None:
                where.append(sql)
                params.append(value)
        sql = ("SELECT run_id, target, created_utc, commit_sha, dirty, status, models, variants, seq, recorded_utc "
               "FROM efb_runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq")
        with self._read() as con:
            rows = con.execute(sql, params).fetchall()
        return [RunRow(r[0], r[1], _utc_text(r[2]), r[3], r[4], r[5], tuple(r[6]), tuple(r[7]),
                       f"{self.uri}#{r[0]}", r[8], _utc_text(r[9])) for r in rows]

    def ids(self) -> list[str]:
        with self._read() as con:
            return [r[0] for r in con.execute("SELECT run_id FROM efb_runs ORDER BY seq")]

    def load_id(self, run_id: str) -> Run:
        with self._read() as con:
            row = con.execute(f"SELECT ({DOC_SQL})::text FROM efb_runs r WHERE run_id = %s", (run_id,)).fetchone()
        if row is None:
            raise UnknownIdError(f"run in {self.uri}", run_id, self.ids()[-10:])
        return self._run(row[0])

    def load(self, ref: str) -> Run:
        """A run by exact id (one query), else by unique id prefix."""
        with self._read() as con:
            row = con.execute(f"SELECT ({DOC_SQL})::text FROM efb_runs r WHERE run_id = %s", (ref,)).fetchone()
            if row is None:
                like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                ids = [r[0] for r in con.execute("SELECT run_id FROM efb_runs WHERE run_id LIKE %s ORDER BY run_id "
                                                 "LIMIT 6", (like,))]
        if row is not None:
            return self._run(row[0])
        if len(ids) == 1:
            return self.load_id(ids[0])
        if ids:
            raise UsageError(f"run '{ref}' is ambiguous in {self.uri}: {', '.join(ids[:5])}")
        raise UnknownIdError(f"run in {self.uri}", ref, self.ids()[-10:])

    def load_many(self, run_ids: list[str]) -> list[Run]:
        """Several runs in one round trip (compare over a hundred nightly runs)."""
        with self._read() as con:
            rows = con.execute(f"SELECT run_id, ({DOC_SQL})::text FROM efb_runs r WHERE run_id = ANY(%s)",
                               (run_ids,)).fetchall()
        by_id = {r[0]: (r[1],) for r in rows}
        missing = [i for i in run_ids if i not in by_id]
        if missing:
            raise UnknownIdError(f"run in {self.uri}", missing[0], self.ids()[-10:])
        return [self._run(*by_id[i]) for i in run_ids]

    def load_headlines(self, run_ids: list[str]) -> list[Run]:
        """Several runs' headline summaries (harness.results.headline) in one round trip: what `bench compare`
        reads. A run pushed before headlines existed comes back in full."""
        with self._read() as con:
            rows = con.execute(f"SELECT run_id, coalesce(headline, {DOC_SQL})::text FROM efb_runs r "
                               "WHERE run_id = ANY(%s)",
                               (run_ids,)).fetchall()
        by_id = {r[0]: r[1] for r in rows}
        missing = [i for i in run_ids if i not in by_id]
        if missing:
            raise UnknownIdError(f"run in {self.uri}", missing[0], self.ids()[-10:])
        return [self._run(by_id[i]) for i in run_ids]

    def _run(self, text: str) -> StoredRun:
        """A run from its jsonb text (json.loads directly: psycopg's jsonb adapter adds nothing here). doc_sha256
        identifies the pushed document (push skips an unchanged run); jsonb is stored parsed and checked by the
        server, so it is not re-hashed on every read (at 1 MB a document that would double the read time)."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"{self.uri}: stored run.json is not JSON ({exc})") from None
        return StoredRun(path=None, doc=doc, store=self)  # type: ignore[arg-type]

    def file(self, run_id: str, path: str) -> bytes | None:
        """A run file's bytes (sha256-checked), None when the run has no such file."""
        with self._read() as con:
            row = con.execute("SELECT data, sha256 FROM efb_files WHERE run_id = %s AND path = %s",
                              (run_id, path)).fetchone()
        if row is None:
            return None
        data = bytes(row[0])
        if hashlib.sha256(data).hexdigest() != row[1]:
            raise IntegrityError(f"{self.uri}#{run_id}/{path}: content does not match its sha256")
        return data

    # -- writing ----------------------------------------------------------------------------------------------
    def put(self, run: Run) -> str:
        """Push a run (a loaded local run directory) in one transaction; see the module docstring."""
        if run.path is None:
            raise UsageError(f"run {run.run_id}: push copies a local run directory; this run has none")
        return self._put(run.doc, run_files(Path(run.path)))

    def _put(self, doc: Mapping[str, Any], files: list[tuple[str, bytes]]) -> str:
        psycopg = _psycopg()
        from psycopg.types.json import Jsonb

        escaped: list[str] = []
        doc = escape_nul(doc, "", escaped)
        if escaped:
            more = f" and {len(escaped) - 3} more" if len(escaped) > 3 else ""
            warnings.warn(f"run {doc['run_id']}: NUL characters pushed as {NUL_ESCAPE} (PostgreSQL text cannot hold "
                          f"them) in {', '.join(escaped[:3])}{more}", stacklevel=3)
        from harness.results.headline import headline_doc

        rid, sha = doc["run_id"], canonical_sha256(doc)
        commit, dirty = _git(doc.get("environment") or {})
        run_row = (rid, doc["target"]["id"], _utc(doc["created_utc"]), _utc(doc.get("finished_utc")), doc["status"],
                   commit, dirty, sorted({e["model"] for e in doc.get("entries", [])}),
                   sorted({e["variant"] for e in doc.get("entries", [])}), doc["schema_version"], Jsonb(doc), sha,
                   socket.gethostname(), Jsonb(headline_doc(dict(doc))))
        con = self._connection()
        try:
            with self._deadline(con, f"while pushing {rid}; a push is all or nothing: push it again"), \
                    con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (rid,))
                old = con.execute("SELECT doc_sha256, seq, recorded_utc FROM efb_runs WHERE run_id = %s",
                                  (rid,)).fetchone()
                if old is not None and old[0] == sha:
                    return "unchanged"
                if old is not None:
                    con.execute("DELETE FROM efb_runs WHERE run_id = %s", (rid,))  # cascades to every table
                    # a replaced run keeps its place in the store's order
                    cols, values = _RUN_COLS + ("seq", "recorded_utc"), run_row + (old[1], old[2])
                else:
                    cols, values = _RUN_COLS, run_row
                con.execute(f"INSERT INTO efb_runs ({','.join(cols)}) VALUES ({','.join(['%s'] * len(cols))})",
                            values)
                with con.cursor() as cur:
                    for table, rows in rows_for(doc).items():
                        self._copy(cur, f"efb_{table}", COLUMNS[table], rows)
                    self._copy(cur, "efb_files", ("run_id", "path", "size", "sha256", "data"),
                               [(rid, p, len(b), hashlib.sha256(b).hexdigest(), b) for p, b in files])
        except psycopg.OperationalError as exc:
            self._drop()
            raise UnavailableError(f"{self.uri}: the PostgreSQL server went away while pushing {rid} "
                                   f"({_first_line(exc)}); nothing of it was committed") from None
        except psycopg.DataError as exc:  # a value the tables cannot hold: the run's fault, not the server's
            raise IntegrityError(f"{self.uri}: run {rid} cannot be stored ({_first_line(exc)})") from None
        return "replaced" if old is not None else "added"

    @staticmethod
    def _copy(cur, table: str, cols: tuple[str, ...], rows: list[tuple]) -> None:
        with cur.copy(f"COPY {table} ({','.join(cols)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)

    def create(self, meta: Mapping[str, Any], run_id: str | None = None) -> RunWriter:
        """A new run in the local spool, its header written through at once (harness/results/pgwrite.py)."""
        from harness.results.pgwrite import StoreRunWriter

        w = self.spool.create(meta, run_id)
        writer = StoreRunWriter(path=w.path, run_id=w.run_id, index=w.index, store=self)
        writer.write_through(complete=False)
        return writer

    def open_existing(self, run_id: str) -> RunWriter:
        """Reopen a partial run to resume it: from the local spool when this host has it, else recreated there
        from the store (`bench run --resume RUN --store URI` on another host); the entries the store already
        has are not written again."""
        from harness.results.pgwrite import StoreRunWriter, materialize
        from harness.results.store import _check_id

        if not (self.spool.root / _check_id("run id", run_id)).is_dir():
            self.spool.root.mkdir(parents=True, exist_ok=True)
            materialize(self, run_id, self.spool.root)
        w = self.spool.open_existing(run_id)
        writer = StoreRunWriter(path=w.path, run_id=w.run_id, index=w.index, store=self)
        try:
            stored = self.entry_keys(run_id)
        except UnavailableError as exc:
            warnings.warn(f"{exc}; the run continues locally in {w.path} and the next entry write retries what "
                          "the store is missing", stacklevel=2)
            writer._away = True
            return writer
        if stored is not None:
            writer.adopt(stored)
        return writer

    def entry_keys(self, run_id: str) -> dict[str, str] | None:
        """Entry id -> the sha256 key of each entry the store holds for a run being written through; None when
        the store lacks the run."""
        with self._read() as con:
            if con.execute("SELECT 1 FROM efb_runs WHERE run_id = %s", (run_id,)).fetchone() is None:
                return None
            return dict(con.execute("SELECT entry, sha256 FROM efb_run_entries WHERE run_id = %s",
                                    (run_id,)).fetchall())


@dataclass
class StoredRun(Run):
    """A run read from PostgreSQL: run.json from efb_runs, arrays and samples fetched from efb_files on demand."""

    store: PostgresStore | None = None

    def array(self, kind: str, entry_id: str) -> np.ndarray | None:
        if kind not in ARRAY_KINDS:
            raise UsageError(f"unknown array kind '{kind}'; valid: {', '.join(ARRAY_KINDS)}")
        data = self.store.file(self.run_id, f"{kind}/{entry_id}.npy")
        if data is None:
            return None
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise IntegrityError(f"{self.store.uri}#{self.run_id}/{kind}/{entry_id}.npy: unreadable ({exc})") from None

    def samples(self, entry_id: str) -> list[dict[str, Any]]:
        return self.file_records(f"samples/{entry_id}.jsonl")

    def file_records(self, path: str) -> list[dict[str, Any]]:
        """JSON-lines records of a stored file, read by the same rules as a local one (store.read_jsonl)."""
        data = self.store.file(self.run_id, path)
        if data is None:
            return []
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            local.write_bytes(data)
            return read_jsonl(local)


def _migrate_identification(con) -> None:
    """Store schema 1 -> 2: the identification tables (just created by _DDL) get the rows of the runs already
    stored, projected by the same code as a push (rows.identification_records) from each entry's
    metrics.identification, which is all that is read back from the stored documents. Runs in the caller's
    transaction, under the schema lock: a store is migrated once, whole or not at all."""
    from harness.results.rows import IDENT_COLUMNS, identification_rows

    found = con.execute("SELECT r.run_id, e.value->>'entry', e.value->'metrics'->'identification' FROM efb_runs r, "
                        "jsonb_array_elements(CASE jsonb_typeof(r.doc->'entries') WHEN 'array' "
                        "THEN r.doc->'entries' ELSE '[]'::jsonb END) e "
                        "WHERE jsonb_typeof(e.value->'metrics'->'identification') = 'object'").fetchall()
    rows: dict[str, list[tuple]] = {t: [] for t in IDENT_COLUMNS}
    for rid, entry, section in found:
        for table, part in identification_rows(rid, {"entry": entry, "metrics": {"identification": section}}).items():
            rows[table] += part
    with con.cursor() as cur:
        for table, part in rows.items():
            PostgresStore._copy(cur, f"efb_{table}", IDENT_COLUMNS[table], part)


def _migrate_search_speed(con) -> None:
    """Store schema 2 -> 5 (and 1 -> 5 after _migrate_identification; 3 or 4 -> 5 after _SEARCH_SPEED_5 added the new
    columns): efb_search_speed gets the rows of the runs already stored, projected by the same code as a push
    (rows.search_speed_rows) from each entry's speed.search. Same transaction and schema lock as the 1 -> 2 upgrade: whole or not at all."""
    from harness.results.rows import SEARCH_SPEED_COLS, search_speed_rows

    found = con.execute("SELECT r.run_id, e.value->>'entry', e.value->'speed'->'search' FROM efb_runs r, "
                        "jsonb_array_elements(CASE jsonb_typeof(r.doc->'entries') WHEN 'array' "
                        "THEN r.doc->'entries' ELSE '[]'::jsonb END) e "
                        "WHERE jsonb_typeof(e.value->'speed'->'search') = 'object'").fetchall()
    rows: list[tuple] = []
    for rid, entry, search in found:
        rows += search_speed_rows(rid, {"entry": entry, "speed": {"search": search}})
    con.execute("DELETE FROM efb_search_speed")  # refilled whole (3 -> 4: with the new columns), never doubled
    with con.cursor() as cur:
        PostgresStore._copy(cur, "efb_search_speed", SEARCH_SPEED_COLS, rows)


def _migrate_energy(con) -> None:
    """Store schema 5 -> 6 (after _SPEED_6 added the columns): each efb_speed row of a stored entry gets its energy
    above idle, projected by the same code as a push (rows.energy_record) from the entry's speed.energy_above_idle
    (the run's document, or the entry a write-through run keeps in efb_run_entries); an entry without that block
    (a run made before it) keeps nulls. Same transaction and schema lock as the other upgrades."""
    from harness.results.rows import ENERGY_COLS, energy_record

    entries = ("SELECT r.run_id, e.value->>'entry', e.value->'speed' FROM efb_runs r, "
               "jsonb_array_elements(CASE jsonb_typeof(r.doc->'entries') WHEN 'array' THEN r.doc->'entries' "
               "ELSE '[]'::jsonb END) e WHERE jsonb_typeof(e.value->'speed'->'energy_above_idle') = 'object' "
               "UNION ALL SELECT run_id, entry, doc->'speed' FROM efb_run_entries "
               "WHERE jsonb_typeof(doc->'speed'->'energy_above_idle') = 'object'")
    found = con.execute(entries).fetchall()
    sets = ", ".join(f"{c} = %s" for c in ENERGY_COLS)
    with con.cursor() as cur:
        cur.executemany(f"UPDATE efb_speed SET {sets} WHERE run_id = %s AND entry = %s",
                        [(*energy_record(speed).values(), rid, entry) for rid, entry, speed in found])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
