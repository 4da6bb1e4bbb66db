"""Choose the results store by URI, as pytest-benchmark chooses its storage (`--benchmark-storage URI`).

- `file://PATH` (or a bare path): run directories + SQLite index under PATH (harness/results/files.py).
- `postgresql://[user[:password]@]host[:port]/dbname[?param=value]` (libpq URI, so `?host=/socket/dir` reaches a
  server on a unix socket): the shared PostgreSQL store (harness/results/postgres.py).

Precedence: `--store URI` > `$BENCH_STORE` > `file://` + the results root (`--results-dir` > `$BENCH_RESULTS` >
./results). A PostgreSQL store still writes through a local run directory under the results root (see
postgres.py), so `--results-dir` keeps its meaning with either store.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from harness.errors import UsageError
from harness.paths import results_root
from harness.results.base import ResultStore

ENV_STORE = "BENCH_STORE"
SCHEMES = ("file", "postgresql", "postgres")


def redact(uri: str) -> str:
    """The URI with its password replaced by '***' (for messages, reports and `bench runs` titles).

    Works on the text of the netloc (userinfo before the last '@'), never on urlsplit's parsed port, so a URI that
    is malformed elsewhere (`:notaport`, `:99999`, a libpq host list `h1:5432,h2:5433`) is still redacted and can be
    named in the one-line error that says what is wrong with it."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unbalanced '[' in the host
        head, sep, rest = uri.partition("://")
        userinfo, at, hosts = rest.rpartition("@")
        if not at or ":" not in userinfo:
            return uri
        return f"{head}{sep}{userinfo.split(':', 1)[0]}:***@{hosts}"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_postgres_uri(uri: str) -> None:
    """UsageError (exit 2, one line, password redacted) for a postgresql:// URI whose host list or port is
    malformed; libpq would otherwise fail later with a message that is not ours, or urllib with a traceback."""
    try:
        netloc = urlsplit(uri).netloc
    except ValueError as exc:
        raise UsageError(f"store '{redact(uri)}': malformed URI ({exc})") from None
    hosts = netloc.rpartition("@")[2]
    for spec in filter(None, hosts.split(",")):  # libpq: host[:port][,host[:port]]...
        host, port = (spec.rsplit("]", 1) if spec.startswith("[") else ("", spec))
        port = port.rpartition(":")[2] if ":" in port else ""
        if spec.startswith("[") and not port and not spec.endswith("]"):
            raise UsageError(f"store '{redact(uri)}': malformed host '{spec}'")
        if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
            raise UsageError(f"store '{redact(uri)}': port '{port}' is not a number from 1 to 65535")


def store_uri(store: str | None = None, results_dir: str | None = None) -> str:
    """The URI the flags and environment select (see the module docstring for the precedence)."""
    uri = store or os.environ.get(ENV_STORE)
    if not uri:
        return results_root(results_dir).path.as_uri()
    return uri


def open_store(uri: str | None = None, *, results_dir: str | None = None) -> ResultStore:
    """The store `uri` names (None: the default chain); UsageError for an unknown scheme."""
    uri = store_uri(uri, results_dir)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if not scheme:
        from harness.results.files import FileStore

        return FileStore(Path(uri).expanduser())
    if scheme not in SCHEMES:
        raise UsageError(f"store '{redact(uri)}': unknown scheme '{scheme}'; valid: file://PATH, postgresql://...")
    if scheme == "file":
        from harness.results.files import FileStore

        path = unquote(uri.split("://", 1)[1])
        if not path:
            raise UsageError("store 'file://' names no folder: give file:///absolute/path or file://relative/path")
        return FileStore(Path(path).expanduser())
    check_postgres_uri(uri)
    from harness.results.postgres import PostgresStore

    return PostgresStore(uri, spool=results_root(results_dir).path)


def store_from_args(args) -> ResultStore:
    """The store of a parsed `bench` command line (global --store and --results-dir)."""
    return open_store(getattr(args, "store", None), results_dir=getattr(args, "results_dir", None))


def as_store(where: ResultStore | str | os.PathLike[str] | None) -> ResultStore:
    """A store given as a store, a URI or a results folder (library callers that still pass a folder)."""
    if isinstance(where, ResultStore):
        return where
    if where is None:
        return open_store()
    return open_store(os.fspath(where) if "://" in os.fspath(where) else Path(where).resolve().as_uri())
