"""The on-board search latency in the PostgreSQL store (issue 18, store schema 3, 4 with the gallery-size sweep's
precision and memory columns): pushed with the run into efb_search_speed, the same rows as `bench export` (one
projection, harness.results.rows.search_speed_records), and a store at schema 2 (before the table) or 3 (before the
columns) upgraded in place with the rows of the runs it holds."""

from __future__ import annotations

import psycopg
import pytest

from harness.jobs import LatencySettings
from harness.launchers.local import LocalLauncher
from harness.results.postgres import STORE_SCHEMA
from harness.results.rows import SEARCH_SPEED_COLS, rows_for
from harness.results.uri import open_store
from harness.search_job import DeviceSearch
from helpers_watchlist import scored_run
from upgrade import left_at, upgraded_once

FAST = LatencySettings(warmup=2, min_duration_s=0.0, min_count=20)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("wl")
    searcher = DeviceSearch(LocalLauncher(timeout_s=120), tmp_path_factory.mktemp("search"), latency=FAST, seed=0,
                            threads=1, sizes=(500,))
    return root, scored_run(root, groups=("a'; DROP TABLE efb_runs; --", "b"), device_search=searcher)


def _table(con, run_id: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT {','.join(SEARCH_SPEED_COLS)} FROM efb_search_speed WHERE run_id = %s",
                              (run_id,)).fetchall(), key=repr)


def _expected(run) -> list[tuple]:
    return sorted(rows_for(run.doc)["search_speed"], key=repr)


def test_search_speed_rows_are_pushed_and_queryable(searched, pg_uri):
    root, run = searched
    store = open_store(pg_uri, results_dir=str(root))
    assert store.put(run) == "added"
    store.close()
    with psycopg.connect(pg_uri) as con:
        assert STORE_SCHEMA >= 5 and len(_expected(run)) == 4 and _table(con, run.run_id) == _expected(run)
        got = con.execute("SELECT DISTINCT precision FROM efb_search_speed WHERE run_id = %s", (run.run_id,)).fetchall()
        assert sorted(p for p, in got) == ["fp32", "int8"]
        # memory against gallery size and precision: the stored bytes are the size times the row's bytes
        for size, precision, nbytes, growth in con.execute(
                "SELECT gallery_size, precision, gallery_bytes, rss_growth_mb FROM efb_search_speed "
                "WHERE run_id = %s", (run.run_id,)).fetchall():
            assert nbytes == size * {"fp32": 4 * 24, "int8": 24 + 4}[precision] and growth >= 0
        # a lab's query: search p50 and its interval against gallery size, per entry
        got = con.execute("SELECT entry, gallery_size, p50_ms, p50_ci_lo_ms, p50_ci_hi_ms, validity FROM "
                          "efb_search_speed WHERE run_id = %s ORDER BY entry, gallery_size", (run.run_id,)).fetchall()
        for e in run.entries:
            mine = [g for g in got if g[0] == e["entry"]]
            sizes = e["speed"]["search"]["syn"]["sizes"]
            assert [(g[1], g[2], g[5]) for g in mine] == [
                (s["size"], s["single_stream"]["p50_ms"], s["validity"]["status"]) for s in sizes]
            assert all(g[3] <= g[2] <= g[4] for g in mine)


def _check(con, run):
    assert _table(con, run.run_id) == _expected(run)


def test_a_schema_2_store_gains_the_search_speed_table_with_its_runs_rows(searched, pg_uri):
    root, run = searched
    left_at(pg_uri, root, run, 2, "DROP TABLE efb_search_speed")
    upgraded_once(pg_uri, root, run, lambda con: _check(con, run))


def test_a_schema_3_store_gains_the_precision_and_memory_columns_with_its_runs_rows(searched, pg_uri):
    root, run = searched
    left_at(pg_uri, root, run, 3, "ALTER TABLE efb_search_speed DROP COLUMN precision, DROP COLUMN gallery_bytes, "
            "DROP COLUMN rss_growth_mb")
    upgraded_once(pg_uri, root, run, lambda con: _check(con, run))  # refilled whole, with the new columns, not doubled
