"""The postgresql:// store against a real PostgreSQL 15 server: round trip, SQL tables, the bench commands
unchanged, four concurrent writers, a server that goes away mid-push, and a writer that pushes as it goes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from harness.cli import main
from harness.errors import EXIT_UNAVAILABLE, UnavailableError
from harness.results import load_run
from harness.results.postgres import PostgresStore
from harness.results.uri import open_store
from helpers_results import make_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Two complete runs of two 'boards' (different latencies; int8 loses accuracy on one group on the second)."""
    root = tmp_path_factory.mktemp("local")
    a = make_run(root, target="cpu", models=("gender-dlib", "mobilefacenet"), seed=1)
    b = make_run(root, target="rpi", models=("gender-dlib", "mobilefacenet"), seed=2,
                 latency_ms={"onnx-fp32": 9.0, "onnx-int8": 4.0}, drop={"onnx-int8": {"black": 0.2}},
                 fmr_boost={"onnx-int8": 0.02})
    return root, a, b


def test_push_round_trip_is_exact_and_queryable_with_sql(local, pg_uri):
    root, a, b = local
    store = open_store(pg_uri, results_dir=str(root))
    assert isinstance(store, PostgresStore)
    assert [store.put(r) for r in (a, b)] == ["added", "added"]
    assert store.put(a) == "unchanged"
    back = store.load(a.run_id[:-2])  # a unique prefix, as on the command line
    assert back.doc == a.doc
    for e in a.entries:
        assert np.array_equal(back.timings(e["entry"]), a.timings(e["entry"]))
        assert back.samples(e["entry"]) == a.samples(e["entry"])
    emb = "mobilefacenet--onnx-int8"
    assert np.array_equal(back.array("embeddings", emb), a.array("embeddings", emb))
    assert [r.run_id for r in store.query(target="rpi")] == [b.run_id]
    assert [r.run_id for r in store.query(model="mobilefacenet", status="complete")] == [a.run_id, b.run_id]
    with psycopg.connect(pg_uri) as con:
        # the per-group rows a lab queries: the int8 black group's accuracy on the rpi run
        (value, n), = con.execute(
            "SELECT value, n FROM efb_rates WHERE run_id = %s AND entry = 'gender-dlib--onnx-int8' "
            "AND metric = 'accuracy' AND group_by = 'ethnicity' AND grp = 'black'", (b.run_id,)).fetchall()
        row = next(r for r in b.entry("gender-dlib--onnx-int8")["metrics"]["rates"]
                   if r["metric"] == "accuracy" and r["group_by"] == "ethnicity" and r["group"] == "black")
        assert (value, n) == (pytest.approx(row["value"]), row["n"])
        p90 = con.execute("SELECT p90_ms FROM efb_speed WHERE run_id = %s AND entry = 'gender-dlib--onnx-fp32'",
                          (b.run_id,)).fetchone()[0]
        assert p90 == pytest.approx(b.entry("gender-dlib--onnx-fp32")["speed"]["single_stream"]["p90_ms"])
        env = con.execute("SELECT value FROM efb_environment WHERE run_id = %s AND key = 'cpu.model'",
                          (a.run_id,)).fetchone()[0]
        assert env == "Intel Xeon Test CPU"
    # a changed run (e.g. rescored) replaces the old one whole
    doc = json.loads((a.path / "run.json").read_text())
    doc["finished_utc"] = "2030-01-01T00:00:00Z"
    (a.path / "run.json").write_text(json.dumps(doc))
    try:
        assert store.put(load_run(a.path)) == "replaced"
        assert store.load(a.run_id).doc["finished_utc"] == "2030-01-01T00:00:00Z"
    finally:
        (a.path / "run.json").write_text(json.dumps(a.doc))
    store.close()


def _bench(*args: str, env_store: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BENCH_STORE", None)
    if env_store:
        env["BENCH_STORE"] = env_store
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)


def test_headline_summary_stored_with_each_run_equals_the_full_read(local, pg_uri):
    """compare over stored headlines (a few kB a run) gives exactly what it gives over the full documents."""
    from harness.report.compare import compare

    root, a, b = local
    store = open_store(pg_uri, results_dir=str(root))
    for r in (a, b):
        store.put(r)
    ids = [a.run_id, b.run_id]
    light, full = store.load_headlines(ids), store.load_many(ids)
    assert all("metrics" not in e for r in light for e in r.entries)
    assert len(json.dumps(light[0].doc)) * 5 < len(json.dumps(full[0].doc))
    assert compare(light).to_dict() == compare(full).to_dict()
    store.close()


def test_bench_commands_work_unchanged_against_postgres(local, pg_uri, tmp_path):
    root, a, b = local
    push = _bench("store", "push", a.run_id, b.run_id, "--results-dir", str(root), "--store", pg_uri)
    assert push.returncode == 0, push.stderr
    assert push.stdout.split()[0] == "added"
    runs = _bench("runs", "--json", env_store=pg_uri)
    assert [r["run_id"] for r in json.loads(runs.stdout)] == [a.run_id, b.run_id]
    for args in (["compare", "--json", a.run_id, b.run_id], ["compare", "--json", "--target", "cpu", "--target", "rpi"]):
        from_pg = _bench(*args, env_store=pg_uri)
        from_files = _bench(*args, "--results-dir", str(root))
        assert from_pg.returncode == from_files.returncode == 0, from_pg.stderr
        assert json.loads(from_pg.stdout) == json.loads(from_files.stdout)
    policy = REPO / "examples" / "policy.toml"
    gate_pg = _bench("gate", "--policy", str(policy), "--baseline", a.run_id, b.run_id, "--store", pg_uri)
    gate_files = _bench("gate", "--policy", str(policy), "--baseline", a.run_id, b.run_id, "--results-dir", str(root))
    assert gate_pg.returncode == gate_files.returncode != 0  # rpi int8 lost a group: the gate fails, from either
    assert gate_pg.stdout == gate_files.stdout
    report = _bench("report", a.run_id, b.run_id, "-o", str(tmp_path / "r.html"), "--store", pg_uri)
    assert report.returncode == 0, report.stderr
    assert "latency" in (tmp_path / "r.html").read_text().lower()
    # the CI flow's readers: the procurement page (newest run of each target) and the trend, from PostgreSQL
    buyers = _bench("report", "--devices", "-o", str(tmp_path / "b.html"), "--store", pg_uri)
    assert buyers.returncode == 0, buyers.stderr
    page = (tmp_path / "b.html").read_text()
    assert page.count(a.run_id) == page.count(b.run_id) == 1 and "DET curves" in page
    trend = _bench("trend", "--json", "--metric", "fmr_at_reference_threshold", "--store", pg_uri)
    assert trend.returncode == 0, trend.stderr
    got = {(s["target"], s["entry"]) for s in json.loads(trend.stdout)["series"]}
    assert got == {(t, f"mobilefacenet--{v}") for t in ("cpu", "rpi") for v in ("onnx-fp32", "onnx-int8")}


def test_trend_tests_a_rates_change_on_the_samples_stored_in_postgres(pg_uri, tmp_path):
    """A rate's change is tested on the two runs' per-sample records: read from PostgreSQL, the same test."""
    root = tmp_path / "nights"
    from helpers_results import labels

    n = len(labels())  # faces per run, one outcome each
    runs = []
    for night, k in enumerate((40, 40, 80)):  # the newest night: 40 new errors on the same faces
        ok = np.ones(n, bool)
        ok[:k] = False
        runs.append(make_run(root, variants=("onnx-fp32", "onnx-int8"), seed=night, outcomes={"onnx-int8": ok}))
    push = _bench("store", "push", *(r.run_id for r in runs), "--results-dir", str(root), "--store", pg_uri)
    assert push.returncode == 0, push.stderr
    args = ("trend", "--json", "--metric", "accuracy", "--entry", "gender-dlib--onnx-int8")
    from_pg, from_files = _bench(*args, "--store", pg_uri), _bench(*args, "--results-dir", str(root))
    assert from_pg.returncode == from_files.returncode == 0, from_pg.stderr
    assert json.loads(from_pg.stdout) == json.loads(from_files.stdout)
    (series,) = json.loads(from_pg.stdout)["series"]
    newest = series["newest"]
    assert (newest["test"], newest["b"], newest["c"], newest["flagged"]) == ("mcnemar", 40, 0, True)
    assert series["steps"][0]["newest"] and series["steps"][0]["run_id"] == runs[2].run_id


def test_four_writers_at_once(local, pg_uri, tmp_path):
    root, a, b = local
    extra = [make_run(tmp_path, target=f"board{i}", seed=10 + i, n_timings=50) for i in range(2)]
    ids = [a.run_id, b.run_id] + [r.run_id for r in extra]
    dirs = [str(root / a.run_id), str(root / b.run_id)] + [str(r.path) for r in extra]
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "store", "push", d, "--store", pg_uri],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env={**__import__("os").environ, "PYTHONPATH": str(REPO)}) for d in dirs]
    # and four more pushing one and the same run at the same time: exactly one adds it
    same = [subprocess.Popen([sys.executable, "-m", "harness", "store", "push", str(root / a.run_id), "--store",
                              pg_uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env={**__import__("os").environ, "PYTHONPATH": str(REPO)}) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs + same]
    assert [p.returncode for p in procs + same] == [0] * 8, [o[1] for o in outs]
    store = open_store(pg_uri)
    assert sorted(store.ids()) == sorted(ids)
    for rid, d in zip(ids, dirs):
        assert store.load(rid).doc == load_run(d).doc
    firsts = [o[0].split()[0] for o in outs]
    assert firsts.count("added") == 4 and firsts.count("unchanged") == 4
    store.close()


def test_server_going_away_mid_push_leaves_nothing_and_the_run_recoverable(local, pg_cluster, pg_uri, monkeypatch):
    root, a, _ = local
    store = open_store(pg_uri, results_dir=str(root))
    store.ids()  # connected, tables made
    real_copy = PostgresStore._copy
    calls = []

    def copy_then_crash(cur, table, cols, rows):
        real_copy(cur, table, cols, rows)
        calls.append(table)
        if len(calls) == 2:  # run row and entries sent, the rest not: the server crashes
            pg_cluster.stop("immediate")

    monkeypatch.setattr(PostgresStore, "_copy", staticmethod(copy_then_crash))
    try:
        with pytest.raises(UnavailableError, match="went away while pushing .*nothing of it was committed"):
            store.put(a)
    finally:
        pg_cluster.start()
    monkeypatch.setattr(PostgresStore, "_copy", staticmethod(real_copy))
    fresh = open_store(pg_uri, results_dir=str(root))
    assert a.run_id not in fresh.ids()  # nothing half-written is shown, complete or otherwise
    with psycopg.connect(pg_uri) as con:
        assert con.execute("SELECT count(*) FROM efb_entries WHERE run_id = %s", (a.run_id,)).fetchone()[0] == 0
    assert load_run(a.path).doc == a.doc  # the local folder is intact ...
    assert fresh.put(load_run(a.path)) == "added"  # ... and pushing it again recovers the run
    assert fresh.load(a.run_id).doc == a.doc
    fresh.close()


def test_writer_through_the_store_pushes_and_survives_an_outage(pg_cluster, pg_uri, tmp_path):
    store = open_store(pg_uri, results_dir=str(tmp_path))
    w = store.create({"target": "cpu"})
    assert [r.status for r in store.query()] == ["partial"]  # a run in progress is listed as partial
    with w:
        w.append_samples("m--onnx-fp32", [{"sample_id": f"s{i}", "status": "ok"} for i in range(5)])
        w.write_array("timings", "m--onnx-fp32", np.arange(5.0))
        pg_cluster.stop("immediate")
        try:
            doc = {**w.read_run_json(), "status": "complete"}
            with pytest.raises(UnavailableError, match=f"complete in {w.path}.*bench store push"):
                w.write_run_json(doc)
        finally:
            pg_cluster.start()
    fresh = open_store(pg_uri, results_dir=str(tmp_path))
    assert [r.status for r in fresh.query()] == ["partial"]  # not shown as complete
    assert load_run(w.path).doc["status"] == "complete"
    assert fresh.put(load_run(w.path)) == "replaced"
    assert [r.status for r in fresh.query()] == ["complete"]
    assert np.array_equal(fresh.load(w.run_id).timings("m--onnx-fp32"), np.arange(5.0))
    assert len(fresh.load(w.run_id).samples("m--onnx-fp32")) == 5
    fresh.close()


def test_unreachable_server_is_one_line_exit_3(capsys, tmp_path):
    code = main(["runs", "--store", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2",
                 "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_UNAVAILABLE and len(err) == 1
    assert err[0].startswith("bench: error: postgresql://nobody@127.0.0.1:1/none") and "cannot connect" in err[0]


def test_socket_uri_and_redacted_password(pg_cluster, local):
    root, a, _ = local
    store = open_store(pg_cluster.socket_uri, results_dir=str(root))
    store.ids()
    store.close()
    s = PostgresStore("postgresql://lab:s3cret@127.0.0.1:1/db", spool=root)
    assert s.uri == "postgresql://lab:***@127.0.0.1:1/db" and "s3cret" not in repr(s.uri)
