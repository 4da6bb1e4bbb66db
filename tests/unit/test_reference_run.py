"""A run on a non-reference target finds the fp32 reference run (cpu, same data) in the results store by itself."""

from __future__ import annotations

import time

from helpers_results import make_run

from harness.scenarios.orchestrate import find_reference_run


def _wanted(run) -> list[dict]:
    return [{"id": d["id"], "manifest_sha256": d["manifest_sha256"], "n_evaluated": d.get("n_evaluated")}
            for d in run.doc["data"]["datasets"]]


def test_newest_complete_cpu_run_over_the_same_data_is_chosen(tmp_path):
    older = make_run(tmp_path, target="cpu")
    time.sleep(1.1)  # run ids and created_utc have one-second resolution
    newer = make_run(tmp_path, target="cpu")
    make_run(tmp_path, target="cuda")  # not a reference target
    make_run(tmp_path, target="cpu", manifest_sha="b" * 64)  # other data
    logs: list[str] = []
    assert find_reference_run(tmp_path, _wanted(older), logs.append) == newer.run_id
    assert newer.run_id in logs[-1]


def test_no_matching_run_means_own_fp32_and_says_so(tmp_path):
    run = make_run(tmp_path, target="cuda")
    logs: list[str] = []
    assert find_reference_run(tmp_path, _wanted(run), logs.append) is None
    assert "own fp32" in logs[-1]


def test_a_reference_fed_other_chips_is_not_taken(tmp_path):
    """Runs recorded before --pipeline existed used the harness chips; an upstream-pipeline run needs its own."""
    run = make_run(tmp_path, target="cpu")
    logs: list[str] = []
    assert find_reference_run(tmp_path, _wanted(run), logs.append, pipeline="harness") == run.run_id
    assert find_reference_run(tmp_path, _wanted(run), logs.append, pipeline="upstream") is None
