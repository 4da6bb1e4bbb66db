"""SQLite run index: filters, concurrent writers from two processes, rebuild when missing or corrupt."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from harness.errors import UsageError
from harness.results import RunIndex, RunStore
from helpers_results import make_run


def _writer(root: str, tag: str, n: int) -> None:
    store = RunStore(root)
    for i in range(n):
        w = store.create({"target": "cpu", "environment": {"git": {"commit": f"{tag}{i:02d}", "dirty": False}}},
                         run_id=f"20260101T0000{i:02d}Z-cpu-{tag}")
        doc = w.read_run_json()
        w.write_run_json({**doc, "status": "complete"})  # a second write per run: more lock contention


def test_two_processes_write_the_index_concurrently(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), tag, 15)) for tag in ("aaaaaa", "bbbbbb")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    con = sqlite3.connect(tmp_path / "index.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = con.execute("SELECT run_id, status FROM runs").fetchall()
    con.close()
    assert len(rows) == 30 and {s for _, s in rows} == {"complete"}


def test_filters(tmp_path):
    a = make_run(tmp_path, target="cpu", models=("gender-dlib",))
    b = make_run(tmp_path, target="rpi", models=("mobilefacenet",),
                 environment={"git": {"commit": "feedbeef00", "dirty": True}})
    idx = RunIndex(tmp_path)
    assert [r.run_id for r in idx.query()] == sorted([a.run_id, b.run_id], key=lambda x: (x[:16], x))
    assert [r.run_id for r in idx.query(target="rpi")] == [b.run_id]
    assert [r.run_id for r in idx.query(model="mobilefacenet")] == [b.run_id]
    assert idx.query(model="mobile") == []  # whole ids, not substrings
    row = idx.query(commit="feed")[0]
    assert row.run_id == b.run_id and row.dirty is True and row.variants == ("onnx-fp32", "onnx-int8")
    assert idx.query(since="2999-01-01") == []
    assert len(idx.query(since="2000-01-01")) == 2
    with pytest.raises(UsageError, match="--since 'last week' is not an ISO date"):
        idx.query(since="last week")


def test_missing_or_corrupt_index_is_rebuilt(tmp_path):
    run = make_run(tmp_path)
    idx = RunIndex(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    assert [r.run_id for r in idx.query()] == [run.run_id]
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.warns(UserWarning, match="corrupt index"):
        assert [r.run_id for r in idx.query()] == [run.run_id]


def test_sync_drops_deleted_and_adds_copied_runs(tmp_path):
    import shutil

    run = make_run(tmp_path / "a")
    idx = RunIndex(tmp_path / "a")
    assert len(idx.query()) == 1
    shutil.copytree(run.path, tmp_path / "b" / run.run_id)  # copied in from a device, index knows nothing
    assert [r.run_id for r in RunIndex(tmp_path / "b").query()] == [run.run_id]
    shutil.rmtree(run.path)
    assert idx.query() == []


def test_runs_command_json_and_table(tmp_path, capsys):
    import argparse
    import json

    from harness.commands import runs as runs_cmd

    a = make_run(tmp_path, target="rpi")
    make_run(tmp_path, target="cpu")
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir")
    runs_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["--results-dir", str(tmp_path), "runs", "--target", "rpi", "--json"])
    assert args.func(args) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [a.run_id]
    args = parser.parse_args(["--results-dir", str(tmp_path), "runs"])
    assert args.func(args) == 0 and "2 run(s)" in capsys.readouterr().out
