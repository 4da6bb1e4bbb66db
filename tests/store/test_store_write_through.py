"""A run written through the PostgreSQL store entry by entry (harness/results/pgwrite.py, issue 19) against a real
PostgreSQL server: one transaction per finished entry, an entry written again replaces its rows (never doubled),
a partial run reads back whole, the server going away mid-run (one warning, the next write sends what is
missing), a resume on another host from what the store has, and the reference run found through the store."""

from __future__ import annotations

import warnings

import numpy as np
import psycopg
import pytest

from harness.results import load_run
from harness.results.pgwrite import StoreRunWriter
from harness.results.rows import entry_rows
from harness.results.uri import open_store
from helpers_results import make_run
from replay import copy_entry_files, header_of, replay

ENTRY_TABLES = ("entries", "speed", "rates", "identification", "identification_gallery_size",
                "identification_flips", "identification_false_candidates", "search_speed")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A complete, scored run of 4 entries (gender and verification, fp32 and int8), written by the real writer."""
    return make_run(tmp_path_factory.mktemp("src"), models=("gender-dlib", "mobilefacenet"), seed=3, n_timings=60)


def counts(uri: str, run_id: str) -> dict[tuple[str, str], int]:
    """(table, entry) -> rows the store holds for the run, every per-entry table and the entry's files."""
    out = {}
    with psycopg.connect(uri) as con:
        for t in ENTRY_TABLES:
            for entry, n in con.execute(f"SELECT entry, count(*) FROM efb_{t} WHERE run_id = %s GROUP BY entry",
                                        (run_id,)):
                out[(t, entry)] = n
        for path, n in con.execute("SELECT path, count(*) FROM efb_files WHERE run_id = %s GROUP BY path", (run_id,)):
            out[("files", path)] = n
    return out


def expected(doc) -> dict[tuple[str, str], int]:
    out = {}
    for e in doc["entries"]:
        for t, rows in entry_rows(doc["run_id"], e).items():
            if rows:
                out[(t, e["entry"])] = len(rows)
    return out


def test_each_entry_is_one_transaction_and_rewriting_it_replaces_its_rows(src, pg_uri, tmp_path):
    store = open_store(pg_uri, results_dir=str(tmp_path / "spool"))
    w = store.create(header_of(src))
    assert isinstance(w, StoreRunWriter) and [r.status for r in store.query()] == ["partial"]
    sent = []

    def after(i, what):
        sent.append(list(w.stats.entries_written))
        w.stats.entries_written.clear()
        if what != "complete":  # a partial run reads back whole: its entries assembled from efb_run_entries
            assert store.load_id(w.run_id).doc == load_run(w.path).doc
            assert np.array_equal(store.load_id(w.run_id).timings(what), src.timings(what))

    with w:
        replay(src, w, after=after)
    ids = [e["entry"] for e in src.entries]
    # one entry per write while running (never the run so far); at the end every entry once more (scored)
    assert sent == [[i] for i in ids] + [ids]
    local = load_run(w.path)
    back = store.load_id(w.run_id)
    assert back.doc == local.doc and back.doc["status"] == "complete"
    for e in ids:
        assert back.samples(e) == src.samples(e) and np.array_equal(back.timings(e), src.timings(e))
    got = counts(pg_uri, w.run_id)
    assert {k: v for k, v in got.items() if k[0] != "files"} == expected(local.doc)
    assert all(v == 1 for k, v in got.items() if k[0] == "files")
    assert store.put(local) == "unchanged"  # what `bench store push` would send is already there
    with psycopg.connect(pg_uri) as con:  # the complete run is stored as a push stores it: one document
        assert con.execute("SELECT count(*) FROM efb_run_entries").fetchone()[0] == 0
        assert con.execute("SELECT headline IS NOT NULL FROM efb_runs").fetchone()[0]
    # writing an entry again (a lost acknowledgement, a second host) replaces it: the same rows, once
    w2 = store.open_existing(w.run_id)
    assert w2._sent == {StoreRunWriter.HEADER: ""}
    w2._flush(local.doc)
    assert sorted(w2.stats.entries_written) == sorted(ids) and counts(pg_uri, w.run_id) == got
    assert store.load_id(w.run_id).doc == local.doc
    store.close()


def test_server_away_warns_once_and_the_next_write_sends_what_is_missing(src, pg_cluster, pg_uri, tmp_path):
    store = open_store(pg_uri, results_dir=str(tmp_path / "spool"))
    w = store.create(header_of(src))
    ids = [e["entry"] for e in src.entries]
    doc = w.read_run_json()
    with w, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, e in enumerate(src.entries):
            if i == 1:
                pg_cluster.stop("immediate")
            if i == 3:
                pg_cluster.start()
            copy_entry_files(src, w.path, e["entry"])
            doc["entries"] = [{k: v for k, v in x.items() if k != "metrics"} for x in src.entries[:i + 1]]
            w.write_run_json(doc)  # never raises while partial: the benchmark goes on locally
    away = [str(c.message) for c in caught if "continues locally" in str(c.message)]
    assert len(away) == 1 and str(w.path) in away[0], [str(c.message) for c in caught]
    assert w.stats.entries_written == [ids[0], ids[1], ids[2], ids[3]]  # 2 and 3 sent once the server was back
    back = open_store(pg_uri, results_dir=str(tmp_path / "other"))
    assert back.load_id(w.run_id).doc == load_run(w.path).doc
    assert counts(pg_uri, w.run_id) == {**expected(load_run(w.path).doc),
                                        **{("files", p): 1 for e in ids for p in
                                           (f"samples/{e}.jsonl", f"timings/{e}.npy")},
                                        **{("files", f"embeddings/{e}.npy"): 1 for e in ids if "mobilefacenet" in e}}
    back.close()
    store.close()


def test_resume_on_another_host_starts_from_what_the_store_has(src, pg_uri, tmp_path):
    store = open_store(pg_uri, results_dir=str(tmp_path / "host-a"))
    w = store.create(header_of(src))
    with w:
        replay(src, w, upto=2)  # two entries finished, then the host is gone
    other = open_store(pg_uri, results_dir=str(tmp_path / "host-b"))
    r = other.open_existing(w.run_id)  # host B has no local folder: recreated from the store
    assert r.path == tmp_path / "host-b" / w.run_id
    assert r.read_run_json() == load_run(w.path).doc
    for e in src.entries[:2]:
        assert r.samples(e["entry"]) == src.samples(e["entry"])
        assert np.array_equal(load_run(r.path).timings(e["entry"]), src.timings(e["entry"]))
    doc = r.read_run_json()
    with r:
        for i, e in enumerate(src.entries[2:], start=2):
            copy_entry_files(src, r.path, e["entry"])
            doc["entries"] = [{k: v for k, v in x.items() if k != "metrics"} for x in src.entries[:i + 1]]
            r.write_run_json(doc)
        r.write_run_json({**src.doc, "run_id": r.run_id, "created_utc": doc["created_utc"]})
    # the entries the store had were not sent again before the final (scored) write
    assert r.stats.entries_written[:2] == [e["entry"] for e in src.entries[2:]]
    assert other.load_id(w.run_id).doc == load_run(r.path).doc
    assert {k: v for k, v in counts(pg_uri, w.run_id).items() if k[0] != "files"} == expected(load_run(r.path).doc)
    other.close()
    store.close()


def test_reference_run_found_through_the_store(src, pg_uri, tmp_path):
    """choose_reference (bench run on a non-reference target) finds a complete cpu run that only the store has."""
    from harness.scenarios.orchestrate import choose_reference

    store = open_store(pg_uri, results_dir=str(tmp_path / "spool"))
    w = store.create(header_of(src))
    with w:
        replay(src, w)
    (tmp_path / "board").mkdir()
    board = open_store(pg_uri, results_dir=str(tmp_path / "board"))  # a board host: nothing local
    choice = choose_reference(board, src.doc["data"]["datasets"], lambda m: None)
    assert choice["run"] == w.run_id
    assert choose_reference(tmp_path / "board", src.doc["data"]["datasets"], lambda m: None)["run"] is None
    board.close()
    store.close()


def test_a_stored_path_that_is_not_a_safe_name_is_refused_on_resume(src, pg_uri, tmp_path):
    """Stored file paths are the store's data: `../x` never becomes a file outside the run folder (exit 4)."""
    from harness.errors import IntegrityError

    store = open_store(pg_uri, results_dir=str(tmp_path / "host-a"))
    w = store.create(header_of(src))
    with w:
        replay(src, w, upto=1)
    with psycopg.connect(pg_uri) as con:
        con.execute("INSERT INTO efb_files VALUES (%s, '../../escaped', 1, %s, 'x')",
                    (w.run_id, __import__("hashlib").sha256(b"x").hexdigest()))
    other = open_store(pg_uri, results_dir=str(tmp_path / "host-b" / "results"))
    with pytest.raises(IntegrityError, match="is not a safe run path"):
        other.open_existing(w.run_id)
    assert not (tmp_path / "host-b" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not (tmp_path / "host-b" / "results" / w.run_id).exists()
    other.close()
    store.close()


def test_run_refuses_a_file_store_other_than_its_results_folder(tmp_path, capsys):
    from harness.cli import main
    from harness.errors import EXIT_USAGE

    code = main(["run", "--target", "cpu", "--store", f"file://{tmp_path}/other", "--results-dir",
                 str(tmp_path / "results"), "--no-build"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1 and "--results-dir" in err[0], err
