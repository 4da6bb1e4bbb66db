"""Four `bench run --store postgresql://...` processes at once into one database (four hosts: four results
folders), one SIGKILLed after its first entry reached the store and resumed on a fifth host with
`--resume RUN --store URI`: every run complete, each entry's rows and files in the store exactly once, and as many
samples per entry as the plan has faces (issue 19). Real runs (gender-dlib on 8 FairFace faces, short timing
windows) against a real PostgreSQL server (tests/store/pgserver.py); 45-76 s for the runs on 2 cores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from harness.results.uri import open_store
from test_store_write_through import counts, expected

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MODEL = "gender-dlib"
SMALL = ["--target", "cpu", "--model", MODEL, "--dataset", "fairface-sample", "--limit", "8", "--threads", "1",
         "--min-duration", "0.05", "--min-count", "5", "--bootstrap", "50", "--no-build"]
PLANS = {"a": ("onnx-fp32", "onnx-int8"), "b": ("onnx-fp32", "onnx-fp16"), "c": ("onnx-int8", "onnx-fp16"),
         "d": ("onnx-fp32", "onnx-int8", "onnx-fp16")}  # d is killed after its first entry and resumed on host e


def _bench(host: Path, args: list[str], built_packs: Path, data_root: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "BENCH_STORE"} | {"PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args, "--results-dir", str(host),
                             "--cache-dir", str(built_packs), "--data-root", str(data_root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _runs(host: Path) -> list[str]:
    return sorted(p.name for p in host.iterdir() if p.is_dir() and not p.name.startswith(".")) if host.is_dir() else []


def _first_entry_stored(host: Path, uri: str) -> str | None:
    runs = _runs(host)
    if not runs:
        return None
    try:
        with psycopg.connect(uri) as con:
            n = con.execute("SELECT count(*) FROM efb_run_entries WHERE run_id = %s", (runs[0],)).fetchone()[0]
    except psycopg.errors.UndefinedTable:  # the first writer has not made the tables yet
        return None
    return runs[0] if n >= 1 else None


def test_four_runs_at_once_one_killed_and_resumed_elsewhere(built_packs, data_root, pg_uri, tmp_path):
    t0 = time.monotonic()
    procs = {h: _bench(tmp_path / h, [*SMALL, *(a for v in vs for a in ("--variant", v)), "--store", pg_uri],
                       built_packs, data_root) for h, vs in PLANS.items()}
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and procs["d"].poll() is None:
        killed = _first_entry_stored(tmp_path / "d", pg_uri)
        time.sleep(0.05)
    assert killed is not None, "run d finished or never wrote an entry: " + procs["d"].communicate()[1][-2000:]
    procs["d"].send_signal(signal.SIGKILL)
    outs = {h: p.communicate(timeout=300) for h, p in procs.items()}
    assert procs["d"].returncode == -signal.SIGKILL
    for h in "abc":
        assert procs[h].returncode == 0, outs[h][1][-2000:]
    with psycopg.connect(pg_uri) as con:
        (status,) = con.execute("SELECT status FROM efb_runs WHERE run_id = %s", (killed,)).fetchone()
        stored = [r[0] for r in con.execute("SELECT entry FROM efb_run_entries WHERE run_id = %s", (killed,))]
    assert status == "partial" and stored, stored
    # resumed on another host: the run folder is recreated from the store; what the store has is not run again
    resume = _bench(tmp_path / "e", ["--resume", killed, "--store", pg_uri], built_packs, data_root)
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err[-2000:]
    assert f"resuming {killed}: {len(stored)} entries already complete" in err
    assert not any(f"{e}: running on" in err for e in stored), err[-2000:]
    wall = time.monotonic() - t0

    store = open_store(pg_uri, results_dir=str(tmp_path / "reader"))
    plan_of = {killed: PLANS["d"]} | {_runs(tmp_path / h)[0]: PLANS[h] for h in "abc"}
    runs = store.query()
    assert sorted(r.run_id for r in runs) == sorted(plan_of) and all(r.status == "complete" for r in runs)
    for row in runs:
        run = store.load_id(row.run_id)
        assert {e["entry"] for e in run.entries} == {f"{MODEL}--{v}" for v in plan_of[row.run_id]}
        assert all(e["status"] == "ok" for e in run.entries)
        got = counts(pg_uri, row.run_id)
        assert {k: v for k, v in got.items() if k[0] != "files"} == expected(run.doc)  # each row exactly once
        assert all(v == 1 for k, v in got.items() if k[0] == "files")
        faces = run.doc["data"]["datasets"][0]["n_evaluated"]
        for e in run.entries:
            ids = [s["sample_id"] for s in run.samples(e["entry"])]
            assert len(ids) == len(set(ids)) == faces  # nothing lost, nothing doubled
    with psycopg.connect(pg_uri) as con:
        assert con.execute("SELECT count(*) FROM efb_run_entries").fetchone()[0] == 0  # all folded on completion
    store.close()
    print(f"four runs, one killed and resumed: {wall:.1f} s wall")
