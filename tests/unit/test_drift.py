"""`bench compare A B --drift` and the kernel-path warning of `bench compare`: two runs of the same packs on the same
data on two (recorded) CPUs, through cross_isa's functions; refused with exit 2 when packs or data differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UsageError
from harness.environment import parse_cpuinfo
from harness.report.compare import compare, paired_rows
from harness.report.drift import drift, refusal
from helpers_results import make_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo"


def cpu(name: str) -> dict:
    return {"cpu": {"model": name, "arch": "x86_64",
                    "flags": parse_cpuinfo((FIXTURES / name).read_text())["flags"]}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    kw = dict(models=("mobilefacenet",), variants=("onnx-fp32", "onnx-int8"))
    avx2 = make_run(root, environment=cpu("x86_amd_epyc_avx2.txt"), seed=0, **kw)
    vnni_same = make_run(root, environment=cpu("x86_xeon_8269cy_avx512_vnni.txt"), seed=0, **kw)
    vnni_other = make_run(root, environment=cpu("x86_xeon_8269cy_avx512_vnni.txt"), seed=1, **kw)
    return root, avx2, vnni_same, vnni_other


def test_compare_says_when_kernel_paths_differ(runs):
    _, avx2, vnni, _ = runs
    table = compare([avx2, vnni])
    warn = [w for w in table.warnings if "int8 kernel path differs" in w]
    assert len(warn) == 1 and "x86-avx512-vnni" in warn[0] and "x86-avx2-vpmaddubsw" in warn[0]
    assert "--drift" in warn[0]
    assert not any(w.startswith(f"{vnni.run_id}: environment kernel_path") for w in table.warnings)
    assert [r["int8"] for r in table.to_dict()["kernel_paths"]] == ["x86-avx2-vpmaddubsw", "x86-avx512-vnni"]
    assert "int8 kernel path differs" in table.to_markdown()
    assert not [w for w in compare([avx2, avx2]).warnings if "kernel path" in w]


def test_identical_outputs_drift_nothing(runs):
    _, avx2, vnni_same, _ = runs
    block = drift(avx2, vnni_same)
    assert block["within_isa"] and block["kernel_paths_differ"]
    assert (block["reference_kernel_path"], block["device_kernel_path"]) == ("x86-avx2-vpmaddubsw", "x86-avx512-vnni")
    assert {e["entry"] for e in block["entries"]} == {"mobilefacenet--onnx-fp32", "mobilefacenet--onnx-int8"}
    for e in block["entries"]:
        assert e["max_abs_diff"] == 0 and all(r["flips"] == 0 for r in e["flips"])
        assert e["threshold_source"] == "fp32" and e["error_rates"]
        # Equal rates on both sides (None only where a group has no pairs of that kind on either side).
        assert all(r["change"] == 0 if r["ref_value"] is not None else r["dev_value"] is None
                   for r in e["error_rates"])


def test_different_outputs_drift_with_counts_and_mcnemar(runs):
    _, avx2, _, vnni_other = runs
    block = drift(avx2, vnni_other)
    e = next(x for x in block["entries"] if x["entry"] == "mobilefacenet--onnx-int8")
    assert e["max_abs_diff"] > 0
    flips = [r for r in e["flips"] if r["metric"] == "pair_correct"]
    assert flips and all(r["n"] > 0 and 0 <= r["p_value"] <= 1 and r["flips"] == r["b"] + r["c"] for r in flips)
    groups = {r["group"] for r in e["error_rates"] if r["metric"] == "fnmr"}
    assert "all" in groups and len(groups) > 1  # per group, at run A's fp32 threshold
    rows = paired_rows(block, block["run"])
    assert rows[0]["isa"] == "x86_64 [x86-avx2-vpmaddubsw] → x86_64 [x86-avx512-vnni]"


def test_refused_when_data_or_packs_differ(tmp_path, runs):
    _, avx2, _, _ = runs
    other_data = make_run(tmp_path, models=("mobilefacenet",), variants=("onnx-fp32", "onnx-int8"),
                          manifest_sha="b" * 64)
    assert "different data" in refusal(avx2, other_data)
    other_pack = make_run(tmp_path, models=("mobilefacenet",), variants=("onnx-fp32", "onnx-int8"),
                          model_sha="c" * 64)
    assert "different pack" in refusal(avx2, other_pack)
    assert "given twice" in refusal(avx2, avx2)
    with pytest.raises(UsageError):
        drift(avx2, other_pack)


def test_cli_drift(runs, capsys):
    root, avx2, _, vnni_other = runs
    base = ["--results-dir", str(root), "compare", avx2.run_id, vnni_other.run_id, "--drift"]
    assert main(base + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["drift"]["within_isa"] and out["rows"]
    assert main(base + ["--md"]) == 0
    assert "within ISA" in capsys.readouterr().out
    assert main(base) == 0
    assert main(["--results-dir", str(root), "compare", avx2.run_id, "--drift"]) == 2
    assert "exactly two runs" in capsys.readouterr().err


def test_summary_lines_name_both_kernel_paths(runs):
    from harness.report.console import kernel_path_lines
    from harness.results.store import Run

    _, avx2, vnni, _ = runs
    lines = [str(t) for t in kernel_path_lines(avx2)]
    assert len(lines) == 1 and "x86-avx2-vpmaddubsw" in lines[0] and "not reported by the runtime" in lines[0]
    doc = dict(vnni.doc, reference={"run": avx2.run_id, "kernel_path": "x86-avx2-vpmaddubsw",
                                    "kernel_path_choice": "the newest; no candidate has this host's int8 kernel path"})
    lines = [str(t) for t in kernel_path_lines(Run(vnni.path, doc))]
    assert "x86-avx512-vnni" in lines[0] and avx2.run_id in lines[1] and "no candidate" in lines[1]
