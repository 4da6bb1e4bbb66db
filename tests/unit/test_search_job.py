"""The 1:N search as a device workload (issue 18): the job spec's bounds, the worker's accuracy pass and timing on a
small synthetic gallery, and the host's check of the board's top-k against its own exact scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.device.search import search_one
from harness.device.worker import run_job
from harness.errors import InfrastructureError, InputError
from harness.jobs import Job, LatencySettings, SearchSpec
from harness.launchers.trust import read_search
from harness.search_job import build, compare, host_top_k, record, synthetic

FAST = LatencySettings(warmup=2, min_duration_s=0.0, min_count=15)


@pytest.mark.parametrize("kw, fragment", [
    ({"k": 0, "sizes": (10,)}, "search.k must be an integer in [1, 1000]"),
    ({"k": True, "sizes": (10,)}, "search.k must be an integer"),
    ({"k": 5, "sizes": ()}, "search.sizes must be gallery sizes"),
    ({"k": 5, "sizes": (10, -1)}, "search.sizes must be gallery sizes"),
    ({"k": 5, "sizes": (10**9,)}, "search.sizes must be gallery sizes"),
    ({"k": 5, "sizes": (100, 10)}, "search.sizes must be increasing"),
    ({"k": 5, "sizes": (10, 10)}, "search.sizes must be increasing"),
    ({"k": 20, "sizes": (10, 100)}, "holds fewer than k=20"),
])
def test_search_spec_is_bounded(kw, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        SearchSpec(**kw)


def _job(tmp_path, n=40, m=6, dim=16, seed=1):
    rng = np.random.default_rng(seed)
    gallery, probes = rng.standard_normal((n, dim)), rng.standard_normal((m, dim))
    job, full = build("e--search--d", gallery, probes, [f"p{i}" for i in range(m)], tmp_path / "in",
                      latency=FAST, seed=seed, k=5)
    return job, full, probes


def test_job_spec_round_trips_and_bad_specs_are_one_line(tmp_path):
    job, full, _ = _job(tmp_path)
    assert job.search == SearchSpec(k=5, sizes=(40, 400)) and len(full) == 400
    assert Job.from_json(job.to_json()) == job
    d = json.loads(job.to_json())
    for bad, fragment in (({"k": 5, "sizes": "400"}, "search.sizes is not a list"),
                          ({"k": 5, "sizes": [400, 40]}, "must be increasing"),
                          ({"k": 5, "sizes": [40], "path": "/etc"}, "not an object of k and sizes")):
        with pytest.raises(InputError, match=f"job.json: not a valid job: .*{fragment}"):
            Job.from_json(json.dumps(d | {"search": bad}))
    with pytest.raises(InputError, match="needs a search spec"):
        Job.from_json(json.dumps(d | {"search": None}))
    with pytest.raises(InputError, match="only such a job has one"):
        Job.from_json(json.dumps(d | {"task": "verification"}))


def test_worker_times_the_search_per_gallery_size_and_returns_the_host_top_k(tmp_path):
    job, full, probes = _job(tmp_path)
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    assert res.search["sizes"] == [40, 400] and res.search["n_gallery"] == 400 and res.search["dim"] == 16
    assert all(c >= FAST.min_count for c in res.search["counts"])
    assert res.backend == {"runtime": "numpy", "requested": "default", "active": ["numpy"], "ok": True,
                           "numpy": np.__version__}
    ret = read_search(tmp_path / "out", job, res, n_gallery=400, dim=16, where="local worker")
    assert ret.sample_ids == tuple(f"p{i}" for i in range(6)) and ret.top_index.shape == (6, 5)
    idx, score = host_top_k(full, probes, 5)
    assert np.array_equal(ret.top_index, idx)  # random Gaussians: no ties, the very same order
    np.testing.assert_allclose(ret.top_score, score, atol=1e-5)
    check = compare(full, probes, ret.top_index, ret.top_score, ret.sample_ids, where="local worker")
    assert check["agree"] == check["same_order"] == 6
    rec = record(ret, job, res, check, 40, min_duration_s=0.0, min_count=FAST.min_count)
    assert [s["size"] for s in rec["sizes"]] == [40, 400] and rec["sizes"][1]["synthetic"] == 360
    for s in rec["sizes"]:
        assert s["single_stream"]["count"] >= 15 and s["validity"]["status"] in ("VALID", "INVALID")
        assert s["single_stream"]["p50_ms"] <= s["single_stream"]["p90_ms"]


def test_ties_are_told_apart_from_wrong_candidates():
    g = np.eye(4)[[0, 1, 1, 2, 3]].astype(float)  # gallery rows 1 and 2 are the same template: a tie
    p = np.array([[0.1, 1.0, 0.0, 0.0]])
    idx, sc = search_one((g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32),
                         (p[0] / np.linalg.norm(p[0])).astype(np.float32), 2)
    assert sorted(idx.tolist()) == [1, 2]
    swapped = idx[::-1][None, :].copy()
    assert compare(g, p, swapped, sc[None, :].astype(float), ("p",), where="b")["agree"] == 1  # ties aside
    wrong = np.array([[1, 0]])
    with pytest.raises(InfrastructureError, match=r"^b: search top-2 of 1 of 1 probes differ .*'p'"):
        compare(g, p, wrong, sc[None, :].astype(float), ("p",), where="b")


def test_synthetic_distractors_are_unit_vectors_and_seeded():
    a, b = synthetic(50, 8, 3), synthetic(50, 8, 3)
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1)


def test_an_emulated_board_marks_its_search_timings_invalid_too():
    from harness.launchers.emulated import emulation_reason, invalidate_timings

    emulation = {"emulated": True, "by": "qemu-user 7.2", "cpu": "cortex-a72"}
    sizes = [{"size": s, "validity": {"status": "VALID", "reasons": []}} for s in (100, 1000)]
    doc = {"launcher": {"kind": "emulated-arm64", "emulation": emulation}, "entries": [
        {"entry": "a", "speed": {"validity": {"status": "VALID", "reasons": []},
                                 "search": {"d": {"status": "ok", "sizes": sizes}, "e": {"status": "failed"}}}}]}
    assert invalidate_timings(doc) == 1 and invalidate_timings(doc) == 1
    assert all(s["validity"] == {"status": "INVALID", "reasons": [emulation_reason(emulation)]} for s in sizes)
