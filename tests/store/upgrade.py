"""The store-upgrade scenario the schema tests share: a store left by an older harness, opened by this one.

`left_at(pg_uri, root, run, schema, *sql)` puts `run` through this harness, then undoes the newer schema with `sql`
(DROP TABLE / ALTER TABLE ... DROP COLUMN) and marks the store as that older `schema`. `upgraded_once(pg_uri, root,
run, check)` opens it again: the store must list the run, say this harness's schema, pass `check(con)` (the new
tables or columns hold the run's rows), and stay as it is when the run is put again and the store reopened.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from harness.results.postgres import STORE_SCHEMA
from harness.results.uri import open_store


def left_at(pg_uri: str, root, run, schema: int, *sql: str) -> None:
    store = open_store(pg_uri, results_dir=str(root))
    store.put(run)
    store.close()
    with psycopg.connect(pg_uri) as con:  # the store as a harness at `schema` left it
        for statement in sql:
            con.execute(statement)
        con.execute("UPDATE efb_meta SET value = %s WHERE key = 'store_schema'", (str(schema),))


def upgraded_once(pg_uri: str, root, run, check: Callable[[psycopg.Connection], None]) -> None:
    store = open_store(pg_uri, results_dir=str(root))
    assert [r.run_id for r in store.query()] == [run.run_id]
    store.close()
    with psycopg.connect(pg_uri) as con:
        assert con.execute("SELECT value FROM efb_meta WHERE key = 'store_schema'").fetchone()[0] == str(STORE_SCHEMA)
        check(con)
    store = open_store(pg_uri, results_dir=str(root))  # upgraded once: putting and reopening change nothing
    assert store.put(run) == "unchanged"
    store.close()
    open_store(pg_uri, results_dir=str(root)).close()
    with psycopg.connect(pg_uri) as con:
        check(con)
