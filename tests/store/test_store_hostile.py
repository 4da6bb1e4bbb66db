"""Issue 17, item 8: the PostgreSQL store against a hostile world. A server frozen mid-push (its backend and
postmaster SIGSTOPped, the kernel still ACKing) is one line, exit 3, within $BENCH_STORE_TIMEOUT, never a hang;
a run.json holding NUL characters is pushed (escaped, with a warning naming the run and the field) instead of an
UntranslatableCharacter traceback; another writer holding the run's lock past the timeout is one line, exit 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from harness.errors import EXIT_OK, EXIT_UNAVAILABLE
from harness.results import load_run
from harness.results.uri import open_store
from helpers_results import make_run

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout_s: str = "4") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "BENCH_STORE"}
    env.update(PYTHONPATH=str(REPO), BENCH_STORE_TIMEOUT=timeout_s)
    return subprocess.Popen([sys.executable, "-m", "harness", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert "Traceback" not in err and "ERROR:" not in err, err
    return lines[0]


def _wait_for_lock_waiter(admin, timeout: float = 60.0) -> int:
    """The pid of the bench backend once it waits on the run's advisory lock (it is then mid-push)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'edge-fair-bench' "
                            "AND wait_event_type = 'Lock'").fetchone()
        if row:
            return row[0]
        time.sleep(0.1)
    raise AssertionError("the push never reached the run's lock")


def test_a_server_frozen_mid_push_is_one_line_exit_3_not_a_hang(pg_cluster, pg_uri, tmp_path):
    """Another session holds the run's advisory lock, so `bench store push` is inside its transaction, waiting;
    then its backend and the postmaster are SIGSTOPped (no server-side timeout can fire). The client-side bound
    ends it: exit 3 within the timeout, one line, and after SIGCONT nothing of the run is in the store."""
    run = make_run(tmp_path, target="cpu", seed=3)
    admin = psycopg.connect(pg_uri, autocommit=True)
    open_store(pg_uri, results_dir=str(tmp_path)).ids()  # tables made
    holder = psycopg.connect(pg_uri)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (run.run_id,))  # a transaction stays open
    proc = _bench("store", "push", str(run.path), "--store", pg_uri, timeout_s="4")
    postmaster = int((pg_cluster.data / "postmaster.pid").read_text().split()[0])
    frozen: list[int] = []
    try:
        backend = _wait_for_lock_waiter(admin)
        for pid in (backend, postmaster):
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)  # the old code waited here forever
        elapsed = time.monotonic() - t0
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        holder.rollback()
        holder.close()
    line = _one_error_line(err)
    assert proc.returncode == EXIT_UNAVAILABLE, err
    assert "did not answer within 4 s (BENCH_STORE_TIMEOUT)" in line and run.run_id in line, line
    assert elapsed < 30, elapsed
    assert admin.execute("SELECT count(*) FROM efb_runs WHERE run_id = %s", (run.run_id,)).fetchone()[0] == 0
    admin.close()
    again = _bench("store", "push", str(run.path), "--store", pg_uri)  # the server answers again: push recovers it
    out, err = again.communicate(timeout=120)
    assert again.returncode == EXIT_OK and out.split()[0] == "added", err


def test_another_writer_holding_the_lock_past_the_timeout_is_exit_3(pg_uri, tmp_path):
    run = make_run(tmp_path, target="cpu", seed=4)
    open_store(pg_uri, results_dir=str(tmp_path)).ids()
    with psycopg.connect(pg_uri) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (run.run_id,))
        out, err = _bench("store", "push", str(run.path), "--store", pg_uri, timeout_s="2").communicate(timeout=60)
        holder.rollback()
    line = _one_error_line(err)
    assert "within 2 s" in line or "held the lock" in line, line


def test_nul_characters_in_run_json_are_pushed_escaped_with_one_warning(pg_uri, tmp_path):
    run = make_run(tmp_path, target="cpu", seed=5, environment={"host": {"name": "lab\x00box"}})
    doc = json.loads((run.path / "run.json").read_text())
    doc["entries"][0]["status"] = "failed"
    doc["entries"][0]["reason"] = "board said \x00\x1b[2Jgone"
    (run.path / "run.json").write_text(json.dumps(doc))  # json escapes NUL as \u0000: a valid run.json
    proc = _bench("store", "push", str(run.path), "--store", pg_uri)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_OK and out.split()[0] == "added", err
    assert "Traceback" not in err and "UntranslatableCharacter" not in err, err
    warning = [line for line in err.splitlines() if line.startswith("bench: warning:")]
    assert len(warning) == 1 and run.run_id in warning[0] and "entries[0].reason" in warning[0], err
    assert "\x00" not in err and "\x1b" not in err, err  # printed escaped
    stored = open_store(pg_uri, results_dir=str(tmp_path)).load(run.run_id).doc
    assert stored["entries"][0]["reason"] == "board said \\u0000\x1b[2Jgone"
    with psycopg.connect(pg_uri) as con:
        reason = con.execute("SELECT reason FROM efb_entries WHERE run_id = %s AND entry = %s",
                             (run.run_id, doc["entries"][0]["entry"])).fetchone()[0]
    assert reason == "board said \\u0000\x1b[2Jgone"
    assert load_run(run.path).doc["entries"][0]["reason"] == "board said \x00\x1b[2Jgone"  # local file untouched
    again = _bench("store", "push", str(run.path), "--store", pg_uri)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == EXIT_OK and out.split()[0] == "unchanged"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_timeout_setting_is_exit_2(pg_uri, tmp_path, value):
    run = make_run(tmp_path, target="cpu", seed=6)
    proc = _bench("store", "push", str(run.path), "--store", pg_uri, timeout_s=value)
    _, err = proc.communicate(timeout=60)
    line = _one_error_line(err)
    assert proc.returncode == 2 and "BENCH_STORE_TIMEOUT" in line, err


def _redate(run, created: str):
    """A copy of the run's folder whose run.json says `created` (set-up: a board whose clock is wrong)."""
    from harness.results.store import RunStore

    w = RunStore(run.path.parent).open_existing(run.run_id)
    w.write_run_json({**w.read_run_json(), "created_utc": created, "finished_utc": created})
    w.close()
    return load_run(run.path)


def test_postgres_orders_runs_by_its_own_sequence_not_their_dates(pg_uri, tmp_path):
    """Issue 17, item 12: a run dated 2099 pushed before today's run is not the newest; `--since` does not keep it
    in every window; it is flagged; replacing it (partial -> complete) keeps its place in the order."""
    future = _redate(make_run(tmp_path, target="cpu", seed=7), "2099-01-01T00:00:00Z")
    today = make_run(tmp_path, target="cpu", seed=8)
    store = open_store(pg_uri, results_dir=str(tmp_path))
    assert [store.put(r) for r in (future, today)] == ["added", "added"]
    rows = store.query(target="cpu")
    assert [r.run_id for r in rows] == [future.run_id, today.run_id] and [r.future for r in rows] == [True, False]
    assert store.newest("cpu").run_id == today.run_id
    assert store.query(since="2098-01-01") == []
    assert [r.run_id for r in store.query(since="2000-01-01")] == [future.run_id, today.run_id]
    seq = {r.run_id: r.seq for r in rows}
    changed = _redate(future, "2099-01-02T00:00:00Z")
    assert store.put(changed) == "replaced"
    assert {r.run_id: r.seq for r in store.query(target="cpu")} == seq  # its place is kept
    assert store.newest("cpu").run_id == today.run_id
    store.close()


def test_a_store_made_before_the_sequence_gains_it_in_place(pg_uri, tmp_path):
    run = make_run(tmp_path, target="cpu", seed=9)
    store = open_store(pg_uri, results_dir=str(tmp_path))
    store.put(run)
    store.close()
    with psycopg.connect(pg_uri) as con:  # the efb_runs of an older harness: no seq, no recorded_utc
        con.execute("ALTER TABLE efb_runs DROP COLUMN seq, DROP COLUMN recorded_utc")
        pushed = con.execute("SELECT pushed_utc FROM efb_runs").fetchone()[0]
    store = open_store(pg_uri, results_dir=str(tmp_path))
    (row,) = store.query()
    assert row.run_id == run.run_id and row.seq == 1 and row.recorded_utc == pushed.strftime("%Y-%m-%dT%H:%M:%SZ")
    later = make_run(tmp_path, target="cpu", seed=10)
    assert store.put(later) == "added"
    assert [r.run_id for r in store.query()] == [run.run_id, later.run_id]
    store.close()
