"""The built model packs, end to end: the full 3 x 6 matrix on any host, fidelity figures and flags, the recorded
calibration split, and the fp32 embedder separating genuine London pairs from impostors (with the real detector,
aligner and runners)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import specs
from harness.models import fidelity
from harness.models.pack import pack_matrix, read_pack, variant_path

pytestmark = pytest.mark.e2e

FIDELITY_FIGURES = {"verification": ("mean_cosine", "min_cosine"), "gender": ("decision_agreement",),
                    "detection": ("found_agreement", "median_iou", "mean_eye_err")}


@pytest.fixture(scope="module")
def matrix(built_packs):
    return pack_matrix(built_packs, specs.all_models())


def test_three_models_by_six_variants(matrix):
    assert len(matrix) == 18
    assert {(r.model, r.variant) for r in matrix} == {(m, v) for m in specs.model_ids() for v in specs.VARIANTS}


def test_every_variant_is_built_or_says_why(matrix):
    for r in matrix:
        assert r.status == "built" or r.reason, f"{r.model} {r.variant}: {r.status} without a reason"
        if r.status == "built":
            assert r.path and Path(r.path).is_file() and r.sha256
    # Every reference (and the detector that feeds everything) must be usable for a run to mean anything.
    built = {(r.model, r.variant) for r in matrix if r.status == "built"}
    for m in specs.all_models():
        assert (m.id, m.reference_variant) in built


def test_every_variant_is_built_on_any_host(matrix):
    """Building does not depend on the CPU's int8 kernels: nothing is refused for its fidelity (a variant outside
    tolerance is built and flagged); only a broken one (NaN/collapsed) would be, and none is."""
    refused = [(r.model, r.variant, r.reason) for r in matrix if r.status != "built"]
    assert not refused, refused


def test_fidelity_is_recorded_and_the_flag_follows_the_figures(matrix):
    """Structure and invariants, never the host's int8 quality: every built variant has its fidelity figures on
    the calibration-disjoint faces and the build host's kernel path, and `flagged` says exactly what the recorded
    counts and the documented tolerance say (harness.models.fidelity)."""
    for r in matrix:
        f = r.fidelity
        assert f is not None and isinstance(f["within_tolerance"], bool), f"{r.model} {r.variant}: fidelity {f}"
        assert f["host"]["arch"] and isinstance(f["host"]["features"], dict)
        assert r.flagged is (not f["within_tolerance"]) and (f["reason"] is None) is f["within_tolerance"]
        if r.variant == specs.get_model(r.model).reference_variant and f.get("against") is None:
            continue  # the reference taken as-is from its source file has nothing to be compared with
        assert f["against"] in specs.VARIANTS and f["n"] >= 100  # the calibration-disjoint sample, not 64 faces
        for key in FIDELITY_FIGURES[r.task]:
            assert isinstance(f[key], float), f"{r.model} {r.variant}: fidelity figure {key} missing"
        d = f["disagreement"]
        assert d["n"] == f["n"] and d["ci_hi"] == pytest.approx(fidelity.disagreement_bound(d["k"], d["n"]))
        assert d["max"] == fidelity.TOLERANCES[r.task]["disagreement_max"]
        if d["ci_hi"] > d["max"]:
            assert r.flagged and f"{d['k']} of {d['n']} faces disagree" in f["reason"]
        assert r.to_dict()["flag"] == (fidelity.flag_text(f) if r.flagged else None)


def test_fp16_variants_change_nothing(matrix):
    """fp16 weights keep ~3 significant digits, so outputs move by about 1e-3 whatever the CPU: bounds that hold by
    construction (a decision can still flip for a face within that distance of 0.5, so decisions are not compared)."""
    fp16 = [r for r in matrix if r.precision == "fp16"]
    assert len(fp16) == 6 and all(r.status == "built" for r in fp16), [(r.model, r.variant, r.reason) for r in fp16]
    for r in fp16:
        f = r.fidelity
        assert not r.flagged, f
        if r.task == "verification":
            assert f["mean_cosine"] >= 0.999 and f["min_cosine"] >= 0.99, f
        elif r.task == "gender":
            assert f["max_abs_diff"] < 0.02, f
        else:
            assert f["found_agreement"] >= 0.99 and f["mean_eye_err"] < 0.02, f


def test_packs_record_the_calibration_split(built_packs, data_root):
    from harness.data.dataset import load_dataset
    from harness.data.splits import calibration_split

    london = set(load_dataset("london-frl", data_root).frame["image"])
    for m in specs.model_ids():
        calib = read_pack(built_packs, m)["calibration"]
        assert calib["dataset"] == "fairface-sample" and calib["id"].startswith("fairface-sample:calib:")
        assert len(calib["sha256"]) == 64
        assert sum(calib["composition"].values()) == calib["n"] == calib["size_requested"]
        assert calib["faces_used"] >= calib["n"] // 2
        # The record is enough to redraw exactly the images the int8 variants saw, and none is a London image.
        ds = load_dataset(calib["dataset"], data_root)
        split = calibration_split(ds, seed=calib["seed"], size=calib["size_requested"], mix=calib["mix"])
        assert split.sha256 == calib["sha256"] and split.composition == calib["composition"]
        assert set(split.images) <= set(ds.frame["image"])
        assert not set(split.images) & london
        assert all(not img.startswith(("neutral_front/", "smiling_front/")) for img in split.images)


def test_genuine_london_pairs_beat_the_impostor_median(built_packs, data_root):
    """Issue requirement: every subject's genuine pair scores above the median impostor score (fp32 embedder)."""
    from harness.data.dataset import load_dataset
    from harness.models.build import CPU_ONNX
    from harness.pipeline import acquire, model_image
    from harness.runners import make_runner
    from harness.tasks.preprocess import normalize
    from harness.tasks.verification import l2_normalize

    ds = load_dataset("london-frl", data_root)
    detector = make_runner(CPU_ONNX, variant_path(built_packs, "blazeface", "onnx-fp32"))
    acquired = acquire(ds, ds.frame, detector)
    failed = [a.image for a in acquired if not a.ok]
    assert not failed, f"no face acquired for {failed}"

    spec = specs.get_model("mobilefacenet")
    embedder = make_runner(CPU_ONNX, variant_path(built_packs, "mobilefacenet", "onnx-fp32"))
    chips = normalize(np.stack([model_image(a, spec.input.resize) for a in acquired]), spec.input.mean, spec.input.scale)
    step = embedder.max_batch(2)
    emb = l2_normalize(np.concatenate([embedder.run(chips[i:i + step])[0] for i in range(0, len(chips), step)]))
    assert emb.shape == (204, 192)

    subjects = ds.frame["subject"].to_numpy()
    sim = emb @ emb.T
    upper = np.triu(np.ones_like(sim, dtype=bool), k=1)
    same = subjects[:, None] == subjects[None, :]
    impostor_median = float(np.median(sim[upper & ~same]))
    genuine = {s: float(sim[upper & same & (subjects[:, None] == s)][0]) for s in np.unique(subjects)}
    assert len(genuine) == 102
    below = {s: round(g, 3) for s, g in genuine.items() if g <= impostor_median}
    print(f"\n{len(genuine) - len(below)}/{len(genuine)} London subjects: genuine score > impostor median "
          f"{impostor_median:.3f} (lowest genuine {min(genuine.values()):.3f})")
    assert not below, f"genuine pairs at or below the impostor median {impostor_median:.3f}: {below}"
