"""The 1:N search as a device workload (issue 18): the job spec's bounds, the worker's accuracy pass and timing on a
small gallery padded per size with synthetic templates drawn on the board, the storage precisions (fp32, fp16, int8
with a scale per template), the memory per size, and the host's check of the board's top-k against its own exact
scores of the same stored templates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.device import search as board
from harness.device.search import search_one
from harness.device.worker import run_job
from harness.errors import InfrastructureError, InputError
from harness.jobs import Job, LatencySettings, SearchSpec
from harness.launchers.trust import read_search
from harness.search_job import (FIDELITY_METRIC, TOO_LARGE, DeviceSearch, build, compare, compare_sizes, fidelity,
                                record, synthetic)

FAST = LatencySettings(warmup=2, min_duration_s=0.0, min_count=15)


@pytest.mark.parametrize("kw, fragment", [
    ({"k": 0, "sizes": (10,)}, "search.k must be an integer in [1, 1000]"),
    ({"k": True, "sizes": (10,)}, "search.k must be an integer"),
    ({"k": 5, "sizes": ()}, "search.sizes must be gallery sizes"),
    ({"k": 5, "sizes": (10, -1)}, "search.sizes must be gallery sizes"),
    ({"k": 5, "sizes": (10**9,)}, "search.sizes must be gallery sizes in [1, 10000000]"),
    ({"k": 5, "sizes": (10_000_001,)}, "search.sizes must be gallery sizes in [1, 10000000]"),
    ({"k": 5, "sizes": (10,), "precision": "int4"}, "search.precision must be one of fp32, fp16, int8"),
    ({"k": 5, "sizes": (10,), "seed": -1}, "search.seed must be an integer"),
    ({"k": 5, "sizes": (10,), "check_rows": (1, 1)}, "search.check_rows must be at most 64 distinct probe rows"),
    ({"k": 5, "sizes": (10,), "check_rows": tuple(range(65))}, "search.check_rows must be at most 64"),
    ({"k": 5, "sizes": (100, 10)}, "search.sizes must be increasing"),
    ({"k": 5, "sizes": (10, 10)}, "search.sizes must be increasing"),
    ({"k": 20, "sizes": (10, 100)}, "holds fewer than k=20"),
])
def test_search_spec_is_bounded(kw, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        SearchSpec(**kw)


def _job(tmp_path, n=40, m=6, dim=16, seed=1, precision="fp32", sizes=(400,)):
    rng = np.random.default_rng(seed)
    gallery, probes = rng.standard_normal((n, dim)), rng.standard_normal((m, dim))
    job = build("e--search--d", gallery, probes, [f"p{i}" for i in range(m)], tmp_path / "in", latency=FAST,
                seed=seed, k=5, sizes=sizes, precision=precision, n_check=4)
    return job, gallery, probes


def test_job_spec_round_trips_and_bad_specs_are_one_line(tmp_path):
    job, _, _ = _job(tmp_path)
    assert (job.search.k, job.search.sizes, job.search.precision, job.search.seed) == (5, (40, 400), "fp32", 1)
    assert len(job.search.check_rows) == 4 and set(job.search.check_rows) <= set(job.pool_rows)
    assert Job.from_json(job.to_json()) == job
    d = json.loads(job.to_json())
    for bad, fragment in (({"k": 5, "sizes": "400"}, "search.sizes is not a list"),
                          ({"k": 5, "sizes": [400], "check_rows": "1"}, "search.check_rows is not a list"),
                          ({"k": 5, "sizes": [400, 40]}, "must be increasing"),
                          ({"k": 5, "sizes": [40], "path": "/etc"}, "not an object of k, sizes, precision"),
                          ({"k": 5, "sizes": [40], "precision": "fp64"}, "search.precision must be one of")):
        with pytest.raises(InputError, match=f"job.json: not a valid job: .*{fragment}"):
            Job.from_json(json.dumps(d | {"search": bad}))
    with pytest.raises(InputError, match="needs a search spec"):
        Job.from_json(json.dumps(d | {"search": None}))
    with pytest.raises(InputError, match="only such a job has one"):
        Job.from_json(json.dumps(d | {"task": "verification"}))
    # a job file of the harness before the sweep (k and sizes only) still reads: float32, seed 0, no check probes
    old = Job.from_json(json.dumps(d | {"search": {"k": 5, "sizes": [40]}})).search
    assert (old.precision, old.seed, old.check_rows) == ("fp32", 0, ())


@pytest.mark.parametrize("precision, itemsize", [("fp32", 4 * 16), ("fp16", 2 * 16), ("int8", 16 + 4)])
def test_worker_times_each_gallery_size_in_the_storage_precision_and_the_host_checks_it(tmp_path, precision,
                                                                                         itemsize):
    job, gallery, probes = _job(tmp_path, precision=precision, sizes=(100, 1_000))
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert res.ok, res.reason
    assert res.search["sizes"] == [40, 100, 1_000] and res.search["n_gallery"] == 40 and res.search["dim"] == 16
    assert res.search["precision"] == precision
    assert all(c >= FAST.min_count for c in res.search["counts"])
    assert res.backend == {"runtime": "numpy", "requested": "default", "active": ["numpy"], "ok": True,
                           "numpy": np.__version__}
    ret = read_search(tmp_path / "out", job, res, n_gallery=40, dim=16, where="local worker")
    assert ret.sample_ids == tuple(f"p{i}" for i in range(6)) and ret.top_index.shape == (6, 5)
    check = compare(gallery, probes, ret.top_index, ret.top_score, ret.sample_ids, where="local worker",
                    precision=precision)
    assert check["agree"] == check["same_order"] == 6  # random Gaussians: no ties, the very same order
    sizes = compare_sizes(gallery, probes, ret, job, where="local worker")
    assert [c["agree"] for c in sizes] == [c["probes"] for c in sizes] == [4, 4, 4]
    rec = record(ret, job, res, check, 40, min_duration_s=0.0, min_count=FAST.min_count, size_checks=sizes)
    assert rec["precision"] == precision
    assert [s["size"] for s in rec["sizes"]] == [40, 100, 1_000] and rec["sizes"][2]["synthetic"] == 960
    for s in rec["sizes"]:
        assert s["single_stream"]["count"] >= 15 and s["validity"]["status"] in ("VALID", "INVALID")
        assert s["single_stream"]["p50_ms"] <= s["single_stream"]["p90_ms"]
        assert s["memory"]["gallery_bytes"] == s["size"] * itemsize and s["memory"]["rss_growth_mb"] >= 0
    # the synthetic rows on the board are the host's: the board's candidates at 1,000 reach past the watchlist
    assert (ret.per_size[2]["check_index"] >= 40).any()


def test_the_board_refuses_a_gallery_that_would_not_fit_its_memory_as_a_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(board, "available_mb", lambda: 64.0)
    job, _, _ = _job(tmp_path, sizes=(10_000_000,))
    res = run_job(job, tmp_path / "in", tmp_path / "out")
    assert not res.ok and res.search == {"refused": "memory"}
    assert res.reason.startswith("search.sizes (10,000,000): a gallery of 10,000,000 fp32 templates of 16 needs ")
    assert "the board has 64 MiB available" in res.reason and "\n" not in res.reason
    assert not list((tmp_path / "out").glob("outputs/*.npz"))  # refused before the accuracy pass


def test_a_refused_size_keeps_the_run_partial_with_exit_2():
    from harness.errors import EXIT_USAGE
    from harness.scenarios.orchestrate import _search_incomplete

    class W:
        run_id = "r1"

    rec = {"status": "failed", "kind": TOO_LARGE, "reason": "search.sizes (10,000,000): ... needs 9 MiB"}
    err = _search_incomplete({"entries": [{"entry": "e", "speed": {"search": {"d": rec}}}]}, W())
    assert err.exit_code == EXIT_USAGE and "--search-sizes" in str(err) and "stays partial" in str(err)
    other = {"status": "failed", "kind": "infrastructure-error", "reason": "gone"}
    err = _search_incomplete({"entries": [{"entry": "e", "speed": {"search": {"d": rec, "f": other}}}]}, W())
    assert err.exit_code == 3


def test_int8_storage_is_symmetric_per_template_and_its_scores_are_dequantised():
    rows = board.normalised(np.random.default_rng(4).standard_normal((300, 64)))
    g = board.store(rows, "int8")
    assert g.codes.dtype == np.int8 and g.scale.dtype == np.float32 and g.nbytes == 300 * (64 + 4)
    assert (np.abs(g.codes).max(axis=1) == 127).all()  # the row's largest component maps to +-127
    assert (np.abs(g.dequantised() - rows) <= g.scale[:, None] / 2 + 1e-7).all()  # half a step at most
    p = rows[0]
    np.testing.assert_allclose(board.scores(g, p), g.dequantised() @ p.astype(np.float64), atol=1e-5)
    h = board.store(rows, "fp16")
    np.testing.assert_allclose(board.scores(h, p), h.dequantised() @ p.astype(np.float64), atol=1e-5)
    assert not np.array_equal(board.scores(g, p), rows @ p)  # the stored values, not the float32 ones


def test_a_board_that_searched_float32_while_claiming_int8_is_refused():
    rng = np.random.default_rng(2)
    gallery, probes = rng.standard_normal((200, 32)), rng.standard_normal((5, 32))
    G, P = board.normalised(gallery), board.normalised(probes)
    f32 = [search_one(G, p, 5) for p in P]
    idx, sc = np.stack([i for i, _ in f32]), np.stack([s for _, s in f32]).astype(float)
    assert compare(gallery, probes, idx, sc, tuple("abcde"), where="b")["agree"] == 5
    with pytest.raises(InfrastructureError, match=r"^b: search top-5 of [1-5] of 5 probes differ"):
        compare(gallery, probes, idx, sc, tuple("abcde"), where="b", precision="int8")
    q = board.store(G, "int8")
    own = [search_one(q, p, 5) for p in P]
    qi, qs = np.stack([i for i, _ in own]), np.stack([s for _, s in own]).astype(float)
    assert compare(gallery, probes, qi, qs, tuple("abcde"), where="b", precision="int8")["agree"] == 5


def test_top1_fidelity_counts_a_quantised_top1_that_is_not_the_float32_top1_per_subject():
    g = board.normalised(np.array([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.0, 0.0, 1.0]]))
    probes = np.array([[1.0, 0.01, 0.0], [1.0, 0.01, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    board_index = np.array([[1, 0], [0, 1], [2, 0], [2, 1]])  # probe 0: the board's top-1 is not float32's
    f32 = board.normalised(probes) @ g.T
    assert f32[0].argmax() == 0 and f32[0, 0] - f32[0, 1] > 1e-4  # so it is a real difference, not a tie
    out = fidelity(g, probes, board_index, "int8", ["s1", "s1", "s2", "s3"], ["a", "a", "b", "b"], "grp",
                   n_boot=200, seed=0)
    assert (out["probes"], out["differs"], out["metric"]) == (4, 1, FIDELITY_METRIC)
    overall = out["rows"][0]
    assert (overall["group"], overall["n"], overall["k"], overall["n_subjects"]) == ("all", 4, 1, 3)
    assert overall["value"] == pytest.approx((0.5 + 0 + 0) / 3)  # every subject weighted once
    assert overall["ci_lo"] <= overall["value"] <= overall["ci_hi"] and overall["unit"] == "subject"
    assert [(r["group"], r["k"]) for r in out["rows"][1:]] == [("a", 1), ("b", 0)]


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


def test_synthetic_templates_are_unit_vectors_seeded_and_nested(monkeypatch):
    a, b = synthetic(50, 8, 3), synthetic(50, 8, 3)
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1) and a.dtype == np.float32
    assert not np.array_equal(a, synthetic(50, 8, 4)[:50])
    monkeypatch.setattr(board, "SYNTHETIC_BLOCK", 16)  # across block boundaries: every size a prefix of a larger
    big = synthetic(100, 8, 3)
    for n in (1, 15, 16, 17, 40):
        assert np.array_equal(synthetic(n, 8, 3), big[:n]), n


def test_an_emulated_board_marks_its_search_timings_invalid_too():
    from harness.launchers.emulated import emulation_reason, invalidate_timings

    emulation = {"emulated": True, "by": "qemu-user 7.2", "cpu": "cortex-a72"}
    sizes = [{"size": s, "validity": {"status": "VALID", "reasons": []}} for s in (100, 1000)]
    doc = {"launcher": {"kind": "emulated-arm64", "emulation": emulation}, "entries": [
        {"entry": "a", "speed": {"validity": {"status": "VALID", "reasons": []},
                                 "search": {"d": {"status": "ok", "sizes": sizes}, "e": {"status": "failed"}}}}]}
    assert invalidate_timings(doc) == 1 and invalidate_timings(doc) == 1
    assert all(s["validity"] == {"status": "INVALID", "reasons": [emulation_reason(emulation)]} for s in sizes)


def test_a_search_the_board_refused_for_its_memory_is_recorded_as_too_large(tmp_path, monkeypatch):
    """The worker's refusal (a real run_job, memory made scarce) read back through DeviceSearch: kind
    gallery-too-large, its one line, no figures."""
    monkeypatch.setattr(board, "available_mb", lambda: 64.0)

    class InProcess:
        name, where = "in-process", "in-process worker"

        def launch(self, job, inputs_dir, out_dir):
            return run_job(job, inputs_dir, out_dir)

    rng = np.random.default_rng(0)
    rec = DeviceSearch(InProcess(), tmp_path, latency=FAST, seed=0, sizes=(10_000_000,))(
        "e", "d", rng.standard_normal((40, 16)), rng.standard_normal((6, 16)), [f"p{i}" for i in range(6)])
    assert rec["status"] == "failed" and rec["kind"] == TOO_LARGE and "sizes" not in rec
    assert "a gallery of 10,000,000 fp32 templates of 16 needs" in rec["reason"]
