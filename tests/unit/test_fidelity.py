"""Fidelity is a measurement: the interval rule, the flag it sets, the kernel path recorded beside it, and a build
that keeps (and flags) a variant outside tolerance while still refusing a broken one. Synthetic outputs: the rule,
not any CPU's int8 kernels, is under test (no assertion here depends on the host's instruction set)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import specs
from harness.metrics.rates import zero_count_interval
from harness.models import build, fidelity
from harness.models.cpu_features import describe, kernel_features
from harness.models.fetch import sha256_file
from harness.models.pack import built_from, variant_path, variant_status, write_pack

X86_VNNI = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni amx_int8\n"
X86_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma\n"


def gender_outputs(p_male: np.ndarray) -> list[list[np.ndarray]]:
    return [[np.array([[1 - p, p]], np.float32)] for p in p_male]


def test_bound_is_clopper_pearson_and_agrees_with_the_zero_count_rule():
    assert fidelity.disagreement_bound(0, 64) == pytest.approx(zero_count_interval(0, 64)[1])
    assert fidelity.disagreement_bound(64, 64) == 1.0
    bounds = [fidelity.disagreement_bound(k, 508) for k in range(0, 40)]
    assert all(a < b for a, b in zip(bounds, bounds[1:])) and all(b > k / 508 for k, b in enumerate(bounds))
    with pytest.raises(ValueError):
        fidelity.disagreement_bound(3, 2)


def test_64_faces_cannot_show_what_508_can():
    # The point: 4/64 (6%) is compatible with far more than 5% disagreement; 0/64 only just shows it is
    # within; on the calibration-disjoint sample a rate well under 5% is shown to be within.
    assert fidelity.disagreement_bound(4, 64) > 0.10
    assert fidelity.disagreement_bound(0, 64) < fidelity.DISAGREEMENT_MAX < fidelity.disagreement_bound(1, 64)
    assert fidelity.disagreement_bound(10, 508) < fidelity.DISAGREEMENT_MAX < fidelity.disagreement_bound(20, 508)


@pytest.mark.parametrize("flips", [0, 10, 20, 60])
def test_gender_decision_follows_the_recorded_counts(flips):
    rng = np.random.default_rng(flips)
    ref = rng.uniform(0, 1, 508)
    var = ref.copy()
    var[:flips] = np.where(ref[:flips] >= 0.5, 0.1, 0.9)  # these faces change decision
    res = fidelity.compare("gender", gender_outputs(ref), gender_outputs(var))
    d = res["disagreement"]
    assert (d["k"], d["n"]) == (flips, 508) and res["decision_agreement"] == pytest.approx(1 - flips / 508)
    assert d["ci_hi"] == pytest.approx(fidelity.disagreement_bound(flips, 508))
    assert res["within_tolerance"] is (d["ci_hi"] <= fidelity.DISAGREEMENT_MAX)
    assert (res["reason"] is None) is res["within_tolerance"]
    if not res["within_tolerance"]:
        assert f"{flips} of 508 faces disagree" in res["reason"]


def test_verification_counts_faces_below_the_cosine_floor():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 192)).astype(np.float32)
    var = ref + rng.normal(scale=0.05, size=ref.shape).astype(np.float32)  # cosine ~0.999
    var[:40] = rng.normal(size=(40, 192))  # 40 faces with unrelated embeddings: cosine ~0
    res = fidelity.compare("verification", [[r[None]] for r in ref], [[v[None]] for v in var])
    assert res["disagreement"]["k"] == 40 and res["within_tolerance"] is False
    assert res["mean_cosine_lo"] < res["mean_cosine"] and "40 of 300 faces disagree" in res["reason"]


def test_flag_text_names_the_figures_and_the_kernel_path(tmp_path):
    (tmp_path / "avx2").write_text(X86_AVX2)
    host = kernel_features(tmp_path / "avx2")
    res = fidelity.compare("gender", gender_outputs(np.full(100, 0.9)), gender_outputs(np.full(100, 0.1)))
    assert not fidelity.flagged(res | {"within_tolerance": True}) and fidelity.flag_text(None) is None
    text = fidelity.flag_text(res | {"host": host})
    assert text.startswith("flagged: 100 of 100 faces disagree") and "avx2" in text and "no VNNI" in text


def test_kernel_features_from_cpuinfo(tmp_path, monkeypatch):
    (tmp_path / "vnni").write_text(X86_VNNI)
    (tmp_path / "avx2").write_text(X86_AVX2)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    vnni, avx2 = kernel_features(tmp_path / "vnni"), kernel_features(tmp_path / "avx2")
    assert vnni["vnni"] is True and vnni["features"]["avx512_vnni"] and vnni["features"]["amx_int8"]
    assert avx2["vnni"] is False and avx2["features"]["avx2"] and not avx2["features"]["avx512f"]
    assert avx2["model"] == "AMD EPYC" and describe(avx2) == "x86_64, avx2, no VNNI"
    missing = kernel_features(tmp_path / "absent")
    assert missing["vnni"] == "unknown" and set(missing["features"].values()) == {"unknown"}
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    arm = kernel_features(tmp_path / "avx2")
    assert "asimddp" in arm["features"] and "avx2" not in arm["features"]


def test_a_variant_outside_tolerance_stays_built_and_flagged(tmp_path):
    """_fidelity_pass on a pack whose int8 variant disagrees with fp32: built, file kept, flagged with its figures
    and the host's features; `bench models list`'s status says so."""
    model = specs.get_model("gender-dlib")
    pack = {"model": model.id, "variants": {}}
    ref = np.random.default_rng(1).uniform(0, 1, 200)
    outputs = {v: gender_outputs(ref) for v in model.build_order()}
    outputs["onnx-int8"] = gender_outputs(np.where(ref >= 0.5, 0.2, 0.8))  # every decision flips
    for v in model.build_order():
        path = variant_path(tmp_path, model.id, v)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(v.encode())
        pack["variants"][v] = {"status": "built", "rebuilt": True, "sha256": sha256_file(path),
                               "built_from": built_from(model, v)}
    logged: list[str] = []
    build._fidelity_pass(tmp_path, model, pack, lambda v, _path: outputs[v], logged.append)
    write_pack(tmp_path, model.id, pack)
    int8 = pack["variants"]["onnx-int8"]
    assert int8["status"] == "built" and variant_path(tmp_path, model.id, "onnx-int8").exists()
    assert int8["fidelity"]["within_tolerance"] is False and int8["fidelity"]["disagreement"]["k"] == 200
    assert int8["fidelity"]["host"] == kernel_features()
    assert logged == [f"gender-dlib onnx-int8: {fidelity.flag_text(int8['fidelity'])}"]
    st = variant_status(tmp_path, model, "onnx-int8")
    assert st.status == "built" and st.flagged and st.to_dict()["flag"].startswith("flagged: 200 of 200")
    assert not variant_status(tmp_path, model, "onnx-fp16").flagged
    json.dumps(pack)  # the record is plain JSON


def test_a_broken_variant_is_still_refused():
    with pytest.raises(fidelity.Collapsed, match="non-finite"):
        fidelity.check_outputs([[np.array([np.nan, 1.0])], [np.array([0.0, 1.0])]])
    with pytest.raises(fidelity.Collapsed, match="identical"):
        fidelity.check_outputs([[np.array([0.5, 0.5])]] * 3)
