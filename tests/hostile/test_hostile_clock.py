"""Issue 17, item 12: clocks. A run's created_utc is the clock of whatever made it -- a board without a real-time
clock, a host whose clock jumped -- so it never orders runs. A run dated in 2099 and recorded *before* today's run
must not become the newest for `compare --target` or the reference of a device run, must not sit in every
`--since` window, and is flagged in `bench runs`; one recorded last is the newest by the store's order, with a
warning naming its date."""

from __future__ import annotations

import json
import os

from conftest import assert_clean

from harness.errors import EXIT_OK

FUTURE = "2099-01-01T00:00:00Z"


def _redate(box, run_id: str, created: str) -> None:
    """Set-up, in process: rewrite a run's own date through the real writer (the index keeps its order)."""
    from harness.results.store import RunStore

    old = os.umask(0o022)
    try:
        w = RunStore(box.results).open_existing(run_id)
        doc = w.read_run_json()
        w.write_run_json({**doc, "created_utc": created, "finished_utc": created})
        w.close()
    finally:
        os.umask(old)


def _runs(box, *args: str) -> list[dict]:
    res = box.bench("runs", "--json", *args)
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    return json.loads(res.out)


def test_a_run_dated_in_the_future_never_becomes_newest_by_its_date(box):
    future = box.run_dir(target="cpu", seed=1)
    _redate(box, future, FUTURE)
    today = box.run_dir(target="cpu", seed=2)  # recorded after it, dated now
    listed = _runs(box)
    assert [r["run_id"] for r in listed] == [future, today]  # the store's order, not the dates'
    assert [r["future"] for r in listed] == [True, False]
    assert listed[0]["seq"] < listed[1]["seq"]
    res = box.bench("compare", "--target", "cpu", "--json")
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    assert today in res.out and future not in res.out
    assert "bench: warning" not in res.err  # the newest is an honest run: nothing to flag
    # the table flags it too
    table = box.bench("runs")
    assert table.rc == EXIT_OK and "(future!)" in table.out, table
    # --since by date: a window starting in 2098 holds no run (the 2099 one was recorded today)
    assert _runs(box, "--since", "2098-01-01") == []
    assert [r["run_id"] for r in _runs(box, "--since", "2000-01-01")] == [future, today]


def test_a_future_dated_run_recorded_last_is_newest_with_a_warning(box):
    today = box.run_dir(target="cpu", seed=1)
    future = box.run_dir(target="cpu", seed=2)
    _redate(box, future, FUTURE)
    res = box.bench("compare", "--target", "cpu", "--json")
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    assert future in res.out and today not in res.out
    warnings = [line for line in res.err.splitlines() if line.startswith("bench: warning:")]
    assert len(warnings) == 1 and future in warnings[0] and FUTURE in warnings[0], res


def test_a_rebuilt_index_orders_by_when_this_host_saw_the_runs(box):
    """The index is a cache: deleted, it is rebuilt, and the order comes from run.json's ctime on this host
    (effective time = min(own date, ctime)), not from the 2099 date."""
    future = box.run_dir(target="cpu", seed=1)
    _redate(box, future, FUTURE)
    today = box.run_dir(target="cpu", seed=2)
    for suffix in ("", "-wal", "-shm"):
        (box.results / f"index.sqlite{suffix}").unlink(missing_ok=True)
    listed = _runs(box)
    assert [r["run_id"] for r in listed] == [future, today] and listed[0]["future"] is True


def test_an_index_written_before_the_order_existed_is_rebuilt(box):
    import sqlite3

    run = box.run_dir(target="cpu", seed=1)
    index = box.results / "index.sqlite"
    with sqlite3.connect(index) as con:  # the old table, without seq / recorded_utc
        con.execute("DROP TABLE runs")
        con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, target TEXT NOT NULL, created_utc TEXT NOT NULL, "
                    "commit_sha TEXT, dirty INTEGER, status TEXT NOT NULL, models TEXT NOT NULL, variants TEXT NOT "
                    "NULL, path TEXT NOT NULL)")
    listed = _runs(box)
    assert [(r["run_id"], r["seq"]) for r in listed] == [(run, 1)]


def test_the_reference_run_is_chosen_by_the_stores_order_not_by_date(box):
    """A device run takes the newest complete cpu run over the same data as its fp32 reference: the one recorded
    last, not a stale one whose board clock says 2099."""
    from harness.results.store import load_run
    from harness.scenarios.orchestrate import find_reference_run

    future = box.run_dir(target="cpu", seed=1)
    _redate(box, future, FUTURE)
    today = box.run_dir(target="cpu", seed=2)
    wanted = [{"id": d["id"], "manifest_sha256": d["manifest_sha256"], "n_evaluated": d.get("n_evaluated")}
              for d in load_run(box.results / today).doc["data"]["datasets"]]
    logs: list[str] = []
    assert find_reference_run(box.results, wanted, logs.append) == today
    _redate(box, today, FUTURE)  # now both are dated 2099: the order still decides, and the choice is flagged
    assert find_reference_run(box.results, wanted, logs.append) == today
    assert any("ahead of the clock" in line and today in line for line in logs), logs
