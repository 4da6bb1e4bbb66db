"""run.json schema: the schema itself is valid draft 2020-12, a v0 document upgrades, newer versions refuse."""

from __future__ import annotations

import json

import pytest

from harness.errors import IntegrityError
from harness.results import load_run, upgrade
from harness.results.schema import load_schema, schema_errors

V0_DOC = {  # the pre-release layout: no schema_version, bare target string, entry "id", speed "latency"
    "run_id": "20250101T000000Z-cpu-abcdef", "created_utc": "2025-01-01T00:00:00Z", "status": "done",
    "target": "cpu",
    "entries": [{"id": "gender-dlib--onnx-fp32", "model": "gender-dlib", "variant": "onnx-fp32", "status": "ok",
                 "speed": {"latency": {"count": 10, "p90_ms": 2.5}}}],
}


def test_schema_is_valid_draft_2020_12():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_v0_document_upgrades_and_loads(tmp_path):
    pytest.importorskip("jsonschema")
    assert schema_errors(V0_DOC)  # not valid as-is
    doc = upgrade(V0_DOC)
    assert doc["schema_version"] == 1 and doc["target"] == {"id": "cpu", "profile": {}}
    assert doc["status"] == "complete"
    assert doc["entries"][0]["entry"] == "gender-dlib--onnx-fp32"
    assert doc["entries"][0]["speed"]["single_stream"]["p90_ms"] == 2.5
    assert schema_errors(doc) == []
    assert "id" in V0_DOC["entries"][0], "upgrade must not mutate its input"
    run_dir = tmp_path / V0_DOC["run_id"]
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps(V0_DOC))
    assert load_run(run_dir).entries[0]["entry"] == "gender-dlib--onnx-fp32"


def test_newer_schema_version_refused():
    with pytest.raises(IntegrityError, match="schema_version 2 is not supported"):
        upgrade({**V0_DOC, "schema_version": 2})


def test_rate_row_missing_value_is_reported_with_its_path():
    pytest.importorskip("jsonschema")
    doc = upgrade(V0_DOC)
    doc["entries"][0]["metrics"] = {"rates": [{"metric": "accuracy", "group_by": "all", "group": "all", "n": 3}]}
    errors = schema_errors(doc)
    assert errors and errors[0].startswith("entries/0/metrics/rates/0:") and "'value'" in errors[0]
