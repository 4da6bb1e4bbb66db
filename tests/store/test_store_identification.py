"""The watchlist (1:N) rows in the PostgreSQL store: pushed with the run into the four efb_identification* tables,
the same rows as `bench export`, group names from data stored as data, and a store made at schema 1 (before
those tables) migrated in place with the rows of the runs it already holds."""

from __future__ import annotations

import psycopg
import pytest

from harness.errors import IntegrityError
from harness.results.postgres import STORE_SCHEMA
from harness.results.rows import IDENT_COLUMNS, rows_for
from harness.results.uri import open_store
from helpers_watchlist import scored_run
from upgrade import left_at, upgraded_once

HOSTILE = ("<b>a'; DROP TABLE efb_runs; --", "b\u00e9\t\"x\"")


@pytest.fixture(scope="module")
def watchlist(tmp_path_factory):
    root = tmp_path_factory.mktemp("wl")
    return root, scored_run(root, groups=HOSTILE)


def _table(con, table: str, run_id: str) -> list[tuple]:
    cols = IDENT_COLUMNS[table]
    return sorted(con.execute(f"SELECT {','.join(cols)} FROM efb_{table} WHERE run_id = %s", (run_id,)).fetchall(),
                  key=repr)


def _expected(run) -> dict[str, list[tuple]]:
    return {t: sorted(rows, key=repr) for t, rows in rows_for(run.doc).items() if t in IDENT_COLUMNS}


def test_identification_rows_are_pushed_and_queryable(watchlist, pg_uri):
    root, run = watchlist
    store = open_store(pg_uri, results_dir=str(root))
    assert store.put(run) == "added"
    int8 = run.entry("mobilefacenet--onnx-int8")["metrics"]["identification"]["syn"]
    with psycopg.connect(pg_uri) as con:
        for table, rows in _expected(run).items():
            assert rows and _table(con, table, run.run_id) == rows, table
        # a lab's query: per probe group FNIR of the fp32 watchlist searched by int8 probes, at the tuned threshold
        got = con.execute("SELECT grp, value, ci_lo, ci_hi, k, n FROM efb_identification WHERE run_id = %s AND "
                          "entry = 'mobilefacenet--onnx-int8' AND config = 'reference_gallery' AND metric = 'fnir' "
                          "AND threshold_kind = 'tuned_fpir' ORDER BY grp", (run.run_id,)).fetchall()
        want = sorted((r["group"], r["value"], r["ci_lo"], r["ci_hi"], r["k"], r["n"])
                      for r in int8["reference_gallery"]["rates"]
                      if r["metric"] == "fnir" and r["threshold_kind"] == "tuned_fpir")
        assert got == want and {g for g, *_ in got} == {"all", *HOSTILE}  # names from data stored verbatim
        flips = con.execute("SELECT config, b, c, p_value FROM efb_identification_flips WHERE run_id = %s AND "
                            "grp = 'all' AND metric = 'fnir' AND threshold_kind = 'tuned_fpir' ORDER BY config",
                            (run.run_id,)).fetchall()
        assert [f[0] for f in flips] == ["own_gallery", "reference_gallery"]
        assert con.execute("SELECT count(*) FROM efb_runs").fetchone()[0] == 1  # the hostile name did nothing
        kinds = con.execute("SELECT DISTINCT kind FROM efb_identification_gallery_size WHERE run_id = %s",
                            (run.run_id,)).fetchall()
        assert sorted(k for k, in kinds) == ["measured", "model"]
    store.close()


def test_a_schema_1_store_gains_the_identification_tables_with_its_runs_rows(watchlist, pg_uri):
    root, run = watchlist
    left_at(pg_uri, root, run, 1, *(f"DROP TABLE efb_{table}" for table in IDENT_COLUMNS))

    def check(con):
        for table, rows in _expected(run).items():
            assert _table(con, table, run.run_id) == rows, table

    upgraded_once(pg_uri, root, run, check)


def test_a_store_of_a_newer_schema_is_refused(watchlist, pg_uri):
    root, run = watchlist
    store = open_store(pg_uri, results_dir=str(root))
    store.query()
    store.close()
    with psycopg.connect(pg_uri) as con:
        con.execute("UPDATE efb_meta SET value = %s WHERE key = 'store_schema'", (str(STORE_SCHEMA + 1),))
    store = open_store(pg_uri, results_dir=str(root))
    with pytest.raises(IntegrityError, match="newer than this harness reads"):
        store.query()
    store.close()
