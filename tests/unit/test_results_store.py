"""RunStore / RunWriter / load_run: exclusive create, atomic writes, torn-tail resume, corrupt runs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from datetime import datetime, timezone

import numpy as np
import pytest

from harness.errors import InputError, IntegrityError, UsageError
from harness.paths import results_root
from harness.results import RunStore, iter_runs, load_run, new_run_id, resolve_run
from harness.results import store as store_mod
from helpers_results import make_run


def test_run_id_format_and_results_root(monkeypatch, tmp_path):
    rid = new_run_id("rpi", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert re.fullmatch(r"20260102T030405Z-rpi-[0-9a-f]{6}", rid)
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "env"))
    # flag > env > ./results, resolved to absolute paths (one resolver for every root: harness.paths)
    assert results_root("flag").path == Path("flag").resolve() and results_root("flag").source == "flag"
    assert results_root(None).path == tmp_path / "env" and results_root(None).source == "env"
    monkeypatch.delenv("BENCH_RESULTS")
    assert results_root(None).path == Path("results").resolve()


def test_create_never_overwrites(tmp_path):
    store = RunStore(tmp_path)
    w = store.create({"target": "cpu"}, run_id="r1")
    (w.path / "marker").write_text("keep")
    with pytest.raises(UsageError, match="run r1 already exists"):
        store.create({"target": "cpu"}, run_id="r1")
    assert (w.path / "marker").read_text() == "keep"
    assert load_run(w.path).doc["status"] == "partial"


def test_unsafe_ids_refused(tmp_path):
    w = RunStore(tmp_path).create({"target": "cpu"})
    with pytest.raises(InputError, match="not a safe file name"):
        w.append_sample("../escape", {"sample_id": "x"})
    with pytest.raises(UsageError, match="unknown array kind"):
        w.write_array("weights", "m--v", np.zeros(3))


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    w = RunStore(tmp_path).create({"target": "cpu"})
    w.write_array("timings", "m--v", np.arange(3.0))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        w.write_array("timings", "m--v", np.arange(5.0))
    np.testing.assert_array_equal(load_run(w.path).timings("m--v"), np.arange(3.0))
    assert not [p for p in (w.path / "timings").iterdir() if p.name.endswith(".tmp")], "temp file left behind"


def test_run_json_validated_before_writing(tmp_path):
    pytest.importorskip("jsonschema")
    w = RunStore(tmp_path).create({"target": "cpu"})
    doc = w.read_run_json()
    before = (w.path / "run.json").read_bytes()
    with pytest.raises(IntegrityError, match="status"):
        w.write_run_json({**doc, "status": "finished-ish"})
    assert (w.path / "run.json").read_bytes() == before
    with pytest.raises(UsageError, match="run_id"):
        w.write_run_json({**doc, "run_id": "other"})


def test_torn_jsonl_tail_dropped_and_resume_appends_cleanly(tmp_path):
    store = RunStore(tmp_path)
    w = store.create({"target": "cpu"})
    with w:
        for i in range(3):
            w.append_sample("m--v", {"sample_id": f"d/{i}.jpg", "status": "ok"})
    path = w.path / "samples" / "m--v.jsonl"
    with open(path, "a") as fh:  # a kill in the middle of writing record 3
        fh.write('{"sample_id": "d/3.jp')
    resumed = store.open_existing(w.run_id)
    assert resumed.done_sample_ids("m--v") == {"d/0.jpg", "d/1.jpg", "d/2.jpg"}
    with resumed:
        resumed.append_sample("m--v", {"sample_id": "d/3.jpg", "status": "ok"})
    assert [r["sample_id"] for r in load_run(w.path).samples("m--v")] == [f"d/{i}.jpg" for i in range(4)]


def test_corrupt_line_in_the_middle_is_an_integrity_error(tmp_path):
    w = RunStore(tmp_path).create({"target": "cpu"})
    path = w.path / "samples" / "m--v.jsonl"
    path.parent.mkdir()
    path.write_text('{"sample_id": "a"}\nnot json\n{"sample_id": "b"}\n')
    with pytest.raises(IntegrityError, match=r"m--v.jsonl:2: corrupt sample record"):
        w.done_sample_ids("m--v")


def test_non_finite_numbers_stored_as_null(tmp_path):
    w = RunStore(tmp_path).create({"target": "cpu"})
    w.append_sample("m--v", {"sample_id": "a", "det_score": float("nan")})
    w.close()
    assert json.loads((w.path / "samples" / "m--v.jsonl").read_text())["det_score"] is None


def test_corrupt_runs_raise_and_are_skipped_with_warning(tmp_path):
    good = make_run(tmp_path)
    (tmp_path / "half").mkdir()  # killed before the first run.json
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "run.json").write_text('{"schema_version": 1, "run_id": ')
    with pytest.raises(IntegrityError, match="no run.json"):
        load_run(tmp_path / "half")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        load_run(bad_json)
    with pytest.warns(UserWarning, match="skipping run") as rec:
        runs = list(iter_runs(tmp_path))
    assert [r.run_id for r in runs] == [good.run_id]
    messages = sorted(str(w.message) for w in rec if "skipping run" in str(w.message))
    assert messages[0].startswith("skipping run badjson: ") and "not valid JSON" in messages[0]
    assert messages[1].startswith("skipping run half: ") and "no run.json" in messages[1]


def test_moved_run_dir_with_wrong_id_is_corrupt(tmp_path):
    run = make_run(tmp_path)
    os.rename(run.path, tmp_path / "renamed")
    with pytest.raises(IntegrityError, match="does not match its directory 'renamed'"):
        load_run(tmp_path / "renamed")


def test_resolve_run_by_path_id_and_prefix(tmp_path):
    run = make_run(tmp_path)
    assert resolve_run(run.run_id, tmp_path) == run.path
    assert resolve_run(run.run_id[:10], tmp_path) == run.path
    assert resolve_run(str(run.path), tmp_path) == run.path
    with pytest.raises(UsageError, match="unknown run"):
        resolve_run("nope", tmp_path)


def test_make_run_roundtrip_has_real_groups(tmp_path):
    run = make_run(tmp_path)
    e = run.entry("gender-dlib--onnx-int8")
    groups = {r["group"] for r in e["metrics"]["rates"] if r["group_by"] == "ethnicity"}
    assert {"black", "white"} <= groups
    assert run.timings("gender-dlib--onnx-int8").shape == (300,)
    assert len(run.samples("gender-dlib--onnx-fp32")) == 204
