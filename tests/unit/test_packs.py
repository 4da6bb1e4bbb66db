"""The pack manifest is cross-checked against the files on disk: a truncated variant is "failed/corrupt", a deleted
one "missing", and `build` repairs them. Works on a copy of the session's built packs in a tmp cache, so the
real cache is never damaged."""

from __future__ import annotations

import shutil
from pathlib import Path

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
