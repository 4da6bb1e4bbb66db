"""The Job / JobResult contract: round trip, strict validation, one-line errors naming the file."""

from __future__ import annotations

import json

import pytest

from harness.errors import InputError
from harness.jobs import (SCHEMA_VERSION, BackendRequest, FileRef, InputArray, Job, JobResult, LatencySettings,
                          OfflineSettings)

SHA = "ab" * 32


def make_job(**kw) -> Job:
    base = dict(entry="gender-dlib--onnx-fp32", task="gender", model=FileRef("gender-dlib--onnx-fp32.onnx", SHA),
                layout="NHWC", inputs=InputArray(FileRef("align-dlib-chip.npy", SHA), (127.5,) * 3, 1 / 127.5),
                backend=BackendRequest("onnxruntime", provider="CPUExecutionProvider", threads=1,
                                       provider_options={"a": 1}),
                samples=(("london-frl/001", 0), ("london-frl/002", 3)), pool_rows=(0, 3),
                latency=LatencySettings(warmup=1, min_duration_s=0.1, min_count=5, max_duration_s=1.0),
                offline=OfflineSettings(batch=4, min_duration_s=0.1, min_count=2), telemetry=("psutil",))
    base.update(kw)
    return Job(**base)


def test_job_round_trips_through_json(tmp_path):
    job = make_job()
    path = job.write(tmp_path)
    back = Job.read(path)
    assert back == job
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_job_result_round_trips_through_json(tmp_path):
    res = JobResult(entry="e--v", status="ok", backend={"runtime": "onnxruntime", "active": ["CPUExecutionProvider"]},
                    output_names=("y",), chunks=("chunk-00000.npz",), init_ms=1.5, timings="timings.npy",
                    offline={"throughput_ips": 10.0}, environment={"cpu": {"arch": "x86_64"}})
    assert JobResult.read(res.write(tmp_path)) == res


def test_unknown_schema_version_is_one_clear_line(tmp_path):
    doc = json.loads(make_job().to_json())
    doc["schema_version"] = 99
    (tmp_path / "job.json").write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        Job.read(tmp_path / "job.json")
    assert str(err.value).startswith(f"{tmp_path / 'job.json'}: schema version 99 is not supported")
    assert "\n" not in str(err.value)


def test_missing_field_names_the_field(tmp_path):
    doc = json.loads(make_job().to_json())
    del doc["backend"]
    with pytest.raises(InputError, match="job.json: not a valid job: missing field 'backend'"):
        Job.from_json(json.dumps(doc))


def test_invalid_json_and_non_object():
    with pytest.raises(InputError, match="invalid JSON"):
        Job.from_json("{")
    with pytest.raises(InputError, match="expected a JSON object"):
        JobResult.from_json("[]")


def test_result_rejects_unknown_fields_and_statuses():
    ok = json.loads(JobResult(entry="e--v", status="ok").to_json())
    with pytest.raises(InputError, match="unknown field"):
        JobResult.from_json(json.dumps(ok | {"surprise": 1}))
    with pytest.raises(InputError, match="status 'maybe' is not one of"):
        JobResult.from_json(json.dumps(ok | {"status": "maybe"}))
    with pytest.raises(InputError, match="needs a reason"):
        JobResult.from_json(json.dumps(ok | {"status": "test-error"}))


@pytest.mark.parametrize("name", ["../model.onnx", "a/b.onnx", "", ".."])
def test_file_refs_stay_inside_the_job_folder(name):
    with pytest.raises(ValueError, match="plain name"):
        FileRef(name, SHA)


def test_file_ref_needs_a_sha256():
    with pytest.raises(ValueError, match="64 lowercase hex"):
        FileRef("m.onnx", "xyz")


def test_job_without_any_feedable_row_is_refused():
    with pytest.raises(ValueError, match="no input row can be fed"):
        make_job(pool_rows=())
