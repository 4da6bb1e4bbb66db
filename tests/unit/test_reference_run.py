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


def _cpu(name: str) -> dict:
    from pathlib import Path

    from harness.environment import parse_cpuinfo

    text = (Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo" / name).read_text()
    return {"cpu": {"arch": "x86_64", "flags": parse_cpuinfo(text)["flags"]}}


def test_the_reference_is_chosen_knowing_its_kernel_path(tmp_path):
    import pytest

    from harness.errors import UsageError
    from harness.scenarios.orchestrate import RunConfig, choose_reference

    vnni = make_run(tmp_path, target="cpu", environment=_cpu("x86_xeon_8269cy_avx512_vnni.txt"))
    time.sleep(1.1)
    avx2 = make_run(tmp_path, target="cpu", environment=_cpu("x86_amd_epyc_avx2.txt"))
    logs: list[str] = []
    wanted = _wanted(vnni)
    # This host has VNNI: the older VNNI run is preferred to the newer AVX2 one, and the summary line says why.
    got = choose_reference(tmp_path, wanted, logs.append, kernel_path="x86-avx512-vnni")
    assert (got["run"], got["kernel_path"]) == (vnni.run_id, "x86-avx512-vnni")
    assert "this host's" in got["choice"] and "x86-avx2-vpmaddubsw" in got["choice"] and vnni.run_id in logs[-1]
    # No candidate has this host's path: the newest, saying its path differs.
    got = choose_reference(tmp_path, wanted, logs.append, kernel_path="x86-amx")
    assert got["run"] == avx2.run_id and "no candidate has this host's" in got["choice"]
    # --reference-kernel-path: only that path, refused (exit 2) when no run has it or the id is unknown.
    assert choose_reference(tmp_path, wanted, logs.append, kernel_path="x86-avx512-vnni",
                            required_kernel_path="x86-avx2-vpmaddubsw")["run"] == avx2.run_id
    with pytest.raises(UsageError, match="no reference run over the same data has it"):
        choose_reference(tmp_path, wanted, logs.append, required_kernel_path="aarch64-dot")
    with pytest.raises(UsageError, match="unknown kernel path"):
        choose_reference(tmp_path, wanted, logs.append, required_kernel_path="avx9000")
    with pytest.raises(UsageError, match="reference_kernel_path"):
        RunConfig(reference_kernel_path="avx9000")


def test_a_finished_run_records_its_references_kernel_path(tmp_path):
    from harness.scenarios.orchestrate import RunConfig, resolve_reference

    vnni = make_run(tmp_path, target="cpu", environment=_cpu("x86_xeon_8269cy_avx512_vnni.txt"))
    logs: list[str] = []
    # A device run driven from an AVX2 host: the only candidate is the VNNI run, taken and said to differ.
    cfg = RunConfig(target="rpi")
    doc = {"environment": _cpu("x86_amd_epyc_avx2.txt"), "reference": {"target": "cpu", "run": None}}
    resolve_reference(cfg, False, doc, tmp_path, _wanted(vnni), logs.append)
    assert cfg.reference_run == vnni.run_id == doc["reference"]["run"]
    assert doc["reference"]["kernel_path"] == "x86-avx512-vnni"
    assert "no candidate has this host's" in doc["reference"]["kernel_path_choice"]
    # --reference RUN: recorded with its path; a cpu run is its own reference and records nothing more.
    doc = {"environment": {}, "reference": {"target": "cpu", "run": vnni.run_id}}
    resolve_reference(RunConfig(target="rpi", reference_run=vnni.run_id), False, doc, tmp_path, [], logs.append)
    assert doc["reference"]["kernel_path_choice"] == "given with --reference"
    doc = {"environment": {}, "reference": {"target": "cpu", "run": None}}
    resolve_reference(RunConfig(target="cpu"), True, doc, tmp_path, [], logs.append)
    assert doc["reference"] == {"target": "cpu", "run": None}
