"""Cross-ISA comparison: output differences, decision flips with McNemar, embedding cosine, FMR/FNMR at fp32's
threshold, and the run-level pairing of entries by pack sha256."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import InputError
from harness.metrics.cross_isa import (
    NO_COMMON_OUTPUT, SHAPE_DIFFERS, cross_isa_entry, cross_isa_runs, max_abs_diff, pair_decisions,
)
from harness.metrics import pair_scores
from harness.metrics.precision_loss import mcnemar_exact
from harness.metrics.search import GRID


def test_max_abs_diff_per_output_ignores_non_finite():
    ref = {"a": np.array([0.0, 1.0, np.nan]), "b": np.array([[1.0, 2.0]])}
    dev = {"a": np.array([0.0, 1.25, 3.0]), "b": np.array([[1.0, 1.5]]), "only_dev": np.zeros(2)}
    out = max_abs_diff(ref, dev)
    assert out["outputs"]["a"] == {"max_abs_diff": 0.25, "n": 2, "n_differ": 1}
    assert out["outputs"]["b"]["max_abs_diff"] == 0.5
    assert out["max_abs_diff"] == 0.5
    assert set(out["outputs"]) == {"a", "b"}


def test_max_abs_diff_identical_is_zero_and_errors_are_one_line():
    x = {"p": np.linspace(0, 1, 5)}
    assert max_abs_diff(x, {"p": x["p"].copy()})["max_abs_diff"] == 0.0
    with pytest.raises(InputError) as e:
        max_abs_diff({"p": np.zeros(3)}, {"p": np.zeros(4)})
    assert str(e.value) == SHAPE_DIFFERS.format(name="p", a=(3,), b=(4,))
    with pytest.raises(InputError) as e:
        max_abs_diff({"p": np.zeros(3)}, {"q": np.zeros(3)})
    assert str(e.value) == NO_COMMON_OUTPUT.format(a="p", b="q")


def test_pair_decisions_groups_genuine_and_correctness():
    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [np.nan, np.nan]])
    pairs = pair_decisions(emb, ["s1", "s1", "s2", "s3"], ["a", "a", "b", "b"], threshold=0.5)
    assert list(pairs["sample_id"]) == ["0-1", "0-2", "1-2"]  # the NaN row is left out
    assert list(pairs["group"]) == ["a", "a|b", "a|b"]
    assert list(pairs["genuine"]) == [True, False, False]
    # the verification scorer's exact grid scores (within the grid's 2^-21 a component of the cosines), the very
    # scores pair_scores files for these pairs
    np.testing.assert_allclose(pairs["score"], [0.8, 0.0, 0.6], rtol=0, atol=2 * GRID)
    filed = pair_scores(emb[:3], ["s1", "s1", "s2"], ["a", "a", "b"])
    assert pairs["score"].tolist() == [*filed.genuine.tolist(), *filed.impostor[(0, 1)].tolist()]
    assert list(pairs["correct"]) == [True, True, False]  # impostor 1-2 scores 0.6 > 0.5: a false match
    at = pair_decisions(emb, ["s1", "s1", "s2", "s3"], ["a", "a", "b", "b"], threshold=float(pairs["score"][2]))
    assert list(at["correct"]) == [True, True, True]  # a score equal to the threshold is no match


def _gender_frames():
    groups = ["f"] * 6 + ["m"] * 6
    ref = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)], "gender": groups,
                        "correct": [True] * 12, "prob_male": np.linspace(0.1, 0.9, 12)})
    dev = ref.copy()
    dev.loc[[0, 1, 2], "correct"] = False          # three flips to wrong in group f
    dev.loc[7, "prob_male"] += 0.04
    return ref, dev


def test_gender_flips_per_group_with_exact_mcnemar():
    ref, dev = _gender_frames()
    out = cross_isa_entry(ref, dev, task="gender", group_by=["gender"],
                          ref_outputs={"prob_male": ref["prob_male"].to_numpy()},
                          dev_outputs={"prob_male": dev["prob_male"].to_numpy()}, decision_cols=["correct"])
    assert out["max_abs_diff"] == pytest.approx(0.04)
    by = {r["group"]: r for r in out["flips"]}
    assert (by["all"]["flips"], by["f"]["b"], by["f"]["c"], by["m"]["flips"]) == (3, 3, 0, 0)
    assert by["f"]["p_value"] == pytest.approx(mcnemar_exact(3, 0)) == pytest.approx(0.25)
    assert out["drift"] == [] and out["error_rates"] == []


def _verification_frames(noise: float):
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"p{i}" for i in range(8)], 2)
    groups = np.where(np.arange(16) < 8, "black", "white")
    centres = rng.normal(size=(8, 16))
    emb = centres[np.repeat(np.arange(8), 2)] + 0.3 * rng.normal(size=(16, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dev = emb.copy()
    dev[0] += noise * rng.normal(size=16)
    ids = [f"x{i}" for i in range(16)]
    ref_df = pd.DataFrame({"sample_id": ids, "subject": subjects, "ethnicity": groups, "embedding": list(emb)})
    dev_df = pd.DataFrame({"sample_id": ids, "subject": subjects, "ethnicity": groups, "embedding": list(dev)})
    return ref_df, dev_df, emb, dev


def test_verification_identical_embeddings_change_nothing():
    ref_df, dev_df, emb, dev = _verification_frames(noise=0.0)
    out = cross_isa_entry(ref_df, dev_df, task="verification", group_by=["ethnicity"], ref_outputs={"e": emb},
                          dev_outputs={"e": dev}, threshold=0.5)
    assert out["max_abs_diff"] == 0.0
    assert all(r["flips"] == 0 for r in out["flips"])
    assert all(r["min"] == pytest.approx(1.0) for r in out["drift"])
    assert out["error_rates"] and all(r["change"] == 0 for r in out["error_rates"])
    assert {r["metric"] for r in out["error_rates"]} == {"fmr", "fnmr"}


def test_verification_perturbed_row_shows_in_its_group_only():
    ref_df, dev_df, emb, dev = _verification_frames(noise=3.0)
    out = cross_isa_entry(ref_df, dev_df, task="verification", group_by=["ethnicity"], ref_outputs={"e": emb},
                          dev_outputs={"e": dev}, threshold=0.5)
    drift = {r["group"]: r for r in out["drift"]}
    assert drift["black"]["min"] < 0.9 and drift["white"]["min"] == pytest.approx(1.0)
    # Pair decisions: only pairs that include row 0 (group "black") can change; McNemar per pair group.
    flips = {r["group"]: r for r in out["flips"] if r["metric"] == "pair_correct"}
    assert set(flips) == {"all", "black", "white"}  # cross-group pairs only in "all"
    assert flips["white"]["flips"] == 0
    # Row 0's genuine pair now scores below the threshold: one flip to wrong (b) in "black", none in "white".
    assert (flips["black"]["flips"], flips["black"]["b"], flips["all"]["flips"]) == (1, 1, 1)
    rates = {(r["metric"], r["group"]): r for r in out["error_rates"]}
    assert (rates[("fnmr", "black")]["ref_value"], rates[("fnmr", "black")]["dev_value"]) == (0.0, 0.25)
    assert rates[("fnmr", "white")]["change"] == 0.0


def test_cross_isa_runs_pairs_entries_by_pack_and_skips_others():
    ref, dev = _gender_frames()
    ref["dataset"] = dev["dataset"] = "london-frl"
    data = {"datasets": [{"id": "london-frl", "default_group_by": ["gender"]}]}
    ent = {"entry": "gender-dlib--onnx-int8", "model": "gender-dlib", "variant": "onnx-int8", "task": "gender",
           "status": "ok", "model_sha256": "a" * 64}
    other = dict(ent, entry="gender-dlib--tflite-int8", variant="tflite-int8")
    dev_doc = {"data": data, "entries": [ent, other],
               "device_environment": {"cpu": {"arch": "aarch64"}, "emulation": {"by": "qemu-user 7.2"}}}
    ref_doc = {"run_id": "R1", "data": data, "environment": {"cpu": {"arch": "x86_64"}},
               "entries": [ent, dict(other, model_sha256="b" * 64)]}
    out = cross_isa_runs(dev_doc, ref_doc, lambda e: dev, lambda e: ref)
    assert (out["reference_arch"], out["device_arch"], out["reference_run"]) == ("x86_64", "aarch64", "R1")
    assert [e["entry"] for e in out["entries"]] == ["gender-dlib--onnx-int8"]
    assert out["skipped"] == [{"entry": "gender-dlib--tflite-int8",
                               "reason": "a different pack (model_sha256) in the reference run"}]
    row = out["entries"][0]
    assert row["dataset"] == "london-frl" and row["max_abs_diff"] == pytest.approx(0.04)
    assert {r["group"]: r["flips"] for r in row["flips"]} == {"all": 3, "f": 3, "m": 0}


def test_compare_rows_one_per_entry_dataset_group():
    from pathlib import Path

    from harness.report.compare import cross_isa_rows
    from harness.results.store import Run

    ref, dev = _gender_frames()
    ref["dataset"] = dev["dataset"] = "london-frl"
    data = {"datasets": [{"id": "london-frl", "default_group_by": ["gender"]}]}
    ent = {"entry": "gender-dlib--onnx-int8", "model": "gender-dlib", "variant": "onnx-int8", "task": "gender",
           "status": "ok", "model_sha256": "a" * 64}
    dev_doc = {"run_id": "ARM", "data": data, "entries": [ent],
               "device_environment": {"cpu": {"arch": "aarch64"}, "emulation": {"by": "qemu-user 7.2"}}}
    ref_doc = {"run_id": "X86", "data": data, "environment": {"cpu": {"arch": "x86_64"}}, "entries": [ent]}
    dev_doc["cross_isa"] = cross_isa_runs(dev_doc, ref_doc, lambda e: dev, lambda e: ref)
    rows = cross_isa_rows(Run(Path("."), dev_doc))
    assert [r["group"] for r in rows] == ["all", "f", "m"]
    assert rows[0]["isa"] == "x86_64 → aarch64 (qemu-user 7.2)" and rows[0]["max_abs_diff"] == "0.04"
    assert rows[1]["flips"] == "correct 3/6 (b3 c0, p=0.25)" and rows[2]["flips"] == "correct 0/6 (b0 c0, p=1)"
    assert rows[1]["max_abs_diff"] == ""  # the entry-level figure is on the "all" row only
    assert cross_isa_rows(Run(Path("."), {"run_id": "plain"})) == []


def test_runs_take_the_fp32_threshold_else_the_reference_entrys_own():
    ref_df, dev_df, _, _ = _verification_frames(noise=3.0)
    for df in (ref_df, dev_df):
        df["dataset"] = "london-frl"
        df["embedding"] = df["embedding"].map(list)
    data = {"datasets": [{"id": "london-frl", "default_group_by": ["ethnicity"]}]}
    ent = {"entry": "mobilefacenet--onnx-int8", "model": "mobilefacenet", "variant": "onnx-int8",
           "task": "verification", "status": "ok", "model_sha256": "c" * 64}
    own = dict(ent, metrics={"verification": {"london-frl": {"threshold": 0.3}}})
    fp32 = {"entry": "mobilefacenet--onnx-fp32", "status": "ok", "model_sha256": "d" * 64,
            "metrics": {"verification": {"london-frl": {"threshold": 0.5}}}}
    dev_doc = {"data": data, "entries": [ent]}
    for ref_entries, want in (([own, fp32], (0.5, "fp32")), ([own], (0.3, "reference entry"))):
        ref_doc = {"run_id": "R", "data": data, "entries": ref_entries}
        row = cross_isa_runs(dev_doc, ref_doc, lambda e: dev_df, lambda e: ref_df)["entries"][0]
        assert (row["threshold"], row["threshold_source"]) == want
        assert {r["group"] for r in row["drift"]} == {"all", "black", "white"}
