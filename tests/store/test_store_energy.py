"""The energy above idle in the PostgreSQL store (issue 21, store schema 6): efb_speed's energy columns are the rows
`bench export` writes (one projection, harness.results.rows.energy_record), and a store at schema 5 (before the
columns) gains them in place, filled from the runs it holds, once."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from harness.metrics.energy import above_idle
from harness.results.postgres import STORE_SCHEMA
from harness.results.rows import ENERGY_COLS, rows_for
from harness.results.uri import open_store
from harness.trackers.telemetry import power_stats
from helpers_results import make_run
from upgrade import left_at, upgraded_once

COLS = ("run_id", "entry") + ENERGY_COLS


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("energy")
    rng = np.random.default_rng(5)
    idle_t, act_t = np.arange(-3.0, 0.0, 0.1), np.arange(0.0, 10.0 + 1e-9, 0.1)
    series = np.r_[np.c_[idle_t, 1800 + rng.normal(0, 40, idle_t.size)],
                   np.c_[act_t, 4200 + rng.normal(0, 150, act_t.size)]]
    power = {**power_stats(series, 10.0), "idle_readings": int(idle_t.size)}
    net = above_idle({"hwmon": {"available": True, "summary": {"power": power}}}, 105.0, 400)
    return root, make_run(root, target="rpi", energy_mj={"onnx-fp32": 105.0}, above_idle={"onnx-fp32": net})


def _table(con, run_id: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT {','.join(COLS)} FROM efb_speed WHERE run_id = %s", (run_id,)).fetchall())


def _expected(run) -> list[tuple]:
    return sorted(r[:2] + r[-len(ENERGY_COLS):] for r in rows_for(run.doc)["speed"])


def test_energy_columns_are_pushed_as_exported(measured, pg_uri):
    root, run = measured
    store = open_store(pg_uri, results_dir=str(root))
    assert store.put(run) == "added"
    store.close()
    with psycopg.connect(pg_uri) as con:
        got = _table(con, run.run_id)
        assert STORE_SCHEMA >= 6 and got == _expected(run)
        assert [g[COLS.index("net_energy_mj")] is None for g in got] == [False, True]  # fp32 measured, int8 not
        lo, e, hi = con.execute("SELECT net_energy_ci_lo_mj, net_energy_mj, net_energy_ci_hi_mj FROM efb_speed "
                                "WHERE run_id = %s AND net_energy_mj IS NOT NULL", (run.run_id,)).fetchone()
        assert lo < e < hi


def test_a_schema_5_store_gains_the_energy_columns_with_its_runs_figures(measured, pg_uri):
    root, run = measured
    left_at(pg_uri, root, run, 5, "ALTER TABLE efb_speed " + ", ".join(f"DROP COLUMN {c}" for c in ENERGY_COLS))

    def check(con):
        assert _table(con, run.run_id) == _expected(run)

    upgraded_once(pg_uri, root, run, check)
