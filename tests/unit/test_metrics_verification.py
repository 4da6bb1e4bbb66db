"""Pair scoring, FMR-tuned threshold, subject-weighted per-group FMR/FNMR and their subject-level intervals."""

from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import InputError
from harness.metrics import (
    disparity_rows, pair_scores, per_group_error_rates, threshold_at_fmr, wilson_interval,
)
from harness.metrics.inputs import BAD_EMBEDDING_ROW, BAD_TARGET_FMR, NO_IMPOSTORS, SUBJECT_IN_TWO_GROUPS
from harness.metrics.search import quantize
from harness.metrics.verification import NO_GENUINE, _Estimator


def data_root() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


def at(degrees):
    r = np.deg2rad(degrees)
    return [np.cos(r), np.sin(r)]


# Unit vectors on a circle: the cosine of two rows is the cosine of their angle difference.
ANGLES = [0, 25, 90, 60, 180, 200]
SUBJECTS = ["A", "A", "B", "C", "C", "D"]
GROUPS = ["g1", "g1", "g1", "g2", "g2", "g2"]


@pytest.fixture()
def hand_scores():
    return pair_scores(np.array([at(a) for a in ANGLES]), SUBJECTS, GROUPS)


def test_pair_scores_hand_case(hand_scores):
    s = hand_scores
    # genuine: A (0,25) cos25 = .9063; C (60,180) cos120 = -.5
    assert sorted(s.genuine.tolist()) == pytest.approx([-0.5, np.cos(np.deg2rad(25))], abs=1e-6)
    # g1 impostors A-B: cos90 = 0, cos65 = .4226; g2 impostors C-D: cos140 = -.7660, cos20 = .9397
    assert np.sort(s.impostor[(0, 0)]) == pytest.approx([0.0, 0.42262], abs=1e-5)
    assert np.sort(s.impostor[(1, 1)]) == pytest.approx([-0.76604, 0.93969], abs=1e-5)
    assert s.impostor[(0, 1)].size == 9 and s.n_impostor == 13  # 3 g1 rows x 3 g2 rows
    # each score's subject pair (code a * S + b) is the pair the score belongs to
    for key, arr in s.impostor.items():
        a, b = np.divmod(s.impostor_pairs[key], s.subjects.size)
        assert np.all(a != b) and np.all(s.subject_group[a] == key[0]) and np.all(s.subject_group[b] == key[1])
    top = s.impostor_pairs[(1, 1)][np.argmax(s.impostor[(1, 1)])]
    assert top in (2 * 4 + 3, 3 * 4 + 2)  # .9397 is C (subject index 2) with D (index 3)


def test_threshold_and_rates_hand_case(hand_scores):
    # impostors descending: .9397 (C-D), .8660 (B-C 90/60), .8192 (A-C 25/60), .5, .4226, ...
    # target 0.1 of 13: k = floor(1.3) = 1 -> threshold = 2nd largest = cos30 = .8660
    t = threshold_at_fmr(hand_scores, target_fmr=0.1)
    assert t == pytest.approx(np.cos(np.deg2rad(30)), abs=1e-6)
    assert threshold_at_fmr(np.concatenate(list(hand_scores.impostor.values())), 0.1) == pytest.approx(t)
    rows = per_group_error_rates(hand_scores, threshold=t, fixed_thresholds=[0.45, 0.95], target_fmr=0.1)
    got = {(r["threshold_kind"], round(r["threshold"], 2), r["metric"], r["group"]): (r["k"], r["n"]) for r in rows}
    # at .866: FMR all 1/13 (.9397); g1 0/2; g2 1/2 (.9397); FNMR: A .9063 matches, C -.5 does not
    expected = {
        ("tuned", 0.87, "fnmr", "all"): (1, 2), ("tuned", 0.87, "fnmr", "g1"): (0, 1),
        ("tuned", 0.87, "fnmr", "g2"): (1, 1), ("tuned", 0.87, "fmr", "all"): (1, 13),
        ("tuned", 0.87, "fmr", "g1"): (0, 2), ("tuned", 0.87, "fmr", "g2"): (1, 2),
        ("tuned", 0.87, "fmr_cross", "g1|g1"): (0, 2), ("tuned", 0.87, "fmr_cross", "g1|g2"): (0, 9),
        ("tuned", 0.87, "fmr_cross", "g2|g2"): (1, 2),
        # at .45: impostors above are .9397, .866, .8192, .5 -> 4/13; g1 0/2 (.4226 < .45); cross 3/9
        ("fixed", 0.45, "fmr", "all"): (4, 13), ("fixed", 0.45, "fmr", "g1"): (0, 2),
        ("fixed", 0.45, "fmr_cross", "g1|g2"): (3, 9), ("fixed", 0.45, "fnmr", "all"): (1, 2),
        # at .95: nothing matches: FMR 0/13, both genuine pairs are non-matches
        ("fixed", 0.95, "fmr", "all"): (0, 13), ("fixed", 0.95, "fnmr", "all"): (2, 2),
    }
    assert {k: got[k] for k in expected} == expected
    assert all(r["target_fmr"] == (0.1 if r["threshold_kind"] == "tuned" else None) for r in rows)


def test_bad_inputs_have_exact_messages():
    with pytest.raises(InputError) as err:
        pair_scores(np.array([at(0), at(10)]), ["A", "A"], ["g1", "g2"])
    assert str(err.value) == SUBJECT_IN_TWO_GROUPS.format(what="pair_scores", subject="A", g1="g1", g2="g2")
    with pytest.raises(InputError) as err:
        threshold_at_fmr(np.array([0.1, 0.2]), target_fmr=0.0)
    assert str(err.value) == BAD_TARGET_FMR.format(target=0.0)
    with pytest.raises(InputError) as err:
        pair_scores(np.array([at(0), [0.0, 0.0], at(5)]), ["A", "B", "C"], ["g"] * 3)
    assert str(err.value) == BAD_EMBEDDING_ROW.format(what="pair_scores", row=1)


def random_set(seed, n_subjects=12, dims=8):
    rng = np.random.default_rng(seed)
    subjects, groups = [], []
    for s in range(n_subjects):
        for _ in range(rng.integers(1, 4)):
            subjects.append(f"s{s:02d}")
            groups.append("g1" if s % 3 else "g2")
    emb = rng.standard_normal((len(subjects), dims)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), np.array(subjects), np.array(groups)


def test_pair_scores_match_brute_force_with_small_blocks():
    emb, subj, grp = random_set(1)
    s = pair_scores(emb, subj, grp, block_rows=3)  # blocks smaller than a group: exercises the chunking
    # the score is the 1:N scorer's: unit rows on its 2^-20 grid, one float64 dot product each (exact)
    g = quantize(emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True))
    full = np.array([[float(np.dot(a, b)) for b in g] for a in g])
    imp = {(0, 0): [], (0, 1): [], (1, 1): []}
    gen = []
    for i, j in combinations(range(len(subj)), 2):
        if subj[i] == subj[j]:
            gen.append(full[i, j])
        else:
            key = tuple(sorted((int(grp[i] == "g2"), int(grp[j] == "g2"))))
            imp[key].append(full[i, j])
    assert sorted(s.genuine) == sorted(gen)
    for key, values in imp.items():
        assert np.sort(s.impostor[key]).tolist() == sorted(values)
    # and within float32 rounding plus the grid's 4.8e-7 a component of the plain cosine
    plain = emb @ emb.T
    assert np.abs(full - plain).max() < 1e-5


def test_resampled_rates_equal_weighted_rates_recomputed_on_the_resampled_set():
    emb, subj, grp = random_set(2)
    scores = pair_scores(emb, subj, grp)
    t = 0.1
    w = np.random.default_rng(5).multinomial(12, [1 / 12] * 12).astype(float)  # subject multiplicities
    got = _Estimator(scores, t).rates(w[None, :])
    # Brute force on the resampled set: copy each subject w_s times; FNMR = mean over copies (with a genuine pair)
    # of the copy's own FNMR; FMR = mean over pairs of copies of two different subjects of their share of image
    # pairs above t.
    full = emb @ emb.T
    copies = [(name, c) for s_i, name in enumerate(scores.subjects) for c in range(int(w[s_i]))]
    group_of = {name: grp[subj == name][0] for name in scores.subjects}

    def subject_fnmr(name):
        idx = np.flatnonzero(subj == name)
        gen = [full[a, b] for a, b in combinations(idx, 2)]
        return np.mean(np.array(gen) <= t) if gen else None

    def pair_fmr(a, b):
        return np.mean(full[np.ix_(np.flatnonzero(subj == a), np.flatnonzero(subj == b))] > t)

    for g, name in enumerate(scores.groups):
        members = [c for c in copies if group_of[c[0]] == name]
        fn = [subject_fnmr(s) for s, _ in members if subject_fnmr(s) is not None]
        fm = [pair_fmr(a, b) for (a, _), (b, _) in combinations(members, 2) if a != b]
        assert got[("fnmr", g)][0] == pytest.approx(np.mean(fn) if fn else np.nan, nan_ok=True)
        assert got[("fmr", g)][0] == pytest.approx(np.mean(fm) if fm else np.nan, nan_ok=True)
    fm_all = [pair_fmr(a, b) for (a, _), (b, _) in combinations(copies, 2) if a != b]
    assert got[("fmr", "all")][0] == pytest.approx(np.mean(fm_all))
    cross = [pair_fmr(a, b) for (a, _), (b, _) in combinations(copies, 2) if group_of[a] != group_of[b]]
    assert got[("fmr_cross", (0, 1))][0] == pytest.approx(np.mean(cross))


def planted_london_set(seed=0, dims=64):
    """Real London set identities and labels (102 subjects x 2 images), synthetic embeddings: each subject an
    identity vector plus per-image noise; every "black" subject also carries one shared direction, which pulls
    that group's impostor scores up (a planted same-group FMR effect)."""
    labels = pd.read_csv(data_root() / "london-frl" / "labels.csv", dtype={"subject": str})
    rng = np.random.default_rng(seed)
    subjects = sorted(labels["subject"].unique())
    identity = dict(zip(subjects, rng.standard_normal((len(subjects), dims))))
    shared = rng.standard_normal(dims)
    emb = np.array([identity[s] + 0.6 * rng.standard_normal(dims) + (1.5 * shared if e == "black" else 0)
                    for s, e in zip(labels["subject"], labels["ethnicity"])])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), labels


def test_planted_group_effect_shows_in_fmr_and_disparity():
    emb, labels = planted_london_set()
    scores = pair_scores(emb, labels["subject"], labels["ethnicity"], group_by="ethnicity")
    t = threshold_at_fmr(scores, 1e-2)
    rows = per_group_error_rates(scores, threshold=t, target_fmr=1e-2)
    fmr = {r["group"]: r for r in rows if r["metric"] == "fmr"}
    assert fmr["all"]["value"] <= 1e-2
    assert max((g for g in fmr if g != "all" and fmr[g]["value"] is not None),
               key=lambda g: fmr[g]["value"]) == "black"
    # one subject: no same-group impostor pair, so the row says the rate is not computable
    assert fmr["east_asian/white"]["value"] is None and fmr["east_asian/white"]["reason"] == "no impostor pairs"
    ratio = next(r for r in disparity_rows(rows, "fmr") if r["summary"] == "max_min_ratio")
    assert ratio["max_group"] == "black" and ratio["n_groups"] == 4
    black = fmr["black"]
    assert black["ci_method"] == "subject_bootstrap" and black["ci_lo"] <= black["value"] <= black["ci_hi"]
    assert black["ci_lo"] > fmr["white"]["value"]  # the planted effect is outside the noise


def test_bootstrap_survives_a_group_missing_from_resamples_and_is_seeded():
    emb, labels = planted_london_set()
    scores = pair_scores(emb, labels["subject"], labels["ethnicity"], group_by="ethnicity")
    t = threshold_at_fmr(scores, 1e-2)
    a = per_group_error_rates(scores, threshold=t, n_boot=300, seed=11)
    assert a == per_group_error_rates(scores, threshold=t, n_boot=300, seed=11)
    assert a != per_group_error_rates(scores, threshold=t, n_boot=300, seed=12)
    # The one east_asian/white subject is absent from about (1-1/102)^102 = 37% of resamples: NaN, skipped.
    lone = next(r for r in a if r["metric"] == "fnmr" and r["group"] == "east_asian/white")
    assert 0 < lone["n_valid"] < 300 and lone["n_units"] == 1


def one_person_dominates(seed=0, dims=32, n_small=10):
    """One group: subject "big" with 50 images scattered at random (its 1,225 genuine pairs mostly fail), ten
    subjects with 2 near-identical images each (their genuine pairs match)."""
    rng = np.random.default_rng(seed)
    rows, subjects = [rng.standard_normal((50, dims))], ["big"] * 50
    for s in range(n_small):
        centre = rng.standard_normal(dims)
        rows.append(centre + 0.01 * rng.standard_normal((2, dims)))
        subjects += [f"s{s}"] * 2
    return np.vstack(rows), np.array(subjects), np.array(["g"] * len(subjects))


def test_one_subject_with_many_images_does_not_make_the_group_fnmr():
    emb, subj, grp = one_person_dominates()
    scores = pair_scores(emb, subj, grp)
    t = 0.5
    rows = per_group_error_rates(scores, threshold=t, n_boot=200)
    fnmr = next(r for r in rows if r["metric"] == "fnmr" and r["group"] == "g")
    big = scores.genuine[scores.genuine_subject == list(scores.subjects).index("big")]
    big_fnmr = float(np.mean(big <= t))
    assert big.size == 1225 and big_fnmr > 0.99  # the premise: the big subject fails nearly every genuine pair
    # pooled over pairs the group's FNMR is the big subject's (1225 of 1235 pairs) ...
    assert fnmr["n"] == 1235 and fnmr["pair_value"] == pytest.approx((big_fnmr * 1225) / 1235)
    # ... weighted, each of the 11 subjects counts once: (big_fnmr + 10 x 0) / 11
    assert fnmr["value"] == pytest.approx(big_fnmr / 11) and fnmr["n_units"] == 11 and fnmr["unit"] == "subject"
    # Subject pairs, not image pairs, weigh the FMR: 55 subject pairs, 10 of which are "big" x 2-image subject.
    fmr = next(r for r in rows if r["metric"] == "fmr" and r["group"] == "g")
    assert fmr["n_units"] == 55 and fmr["unit"] == "subject_pair" and fmr["n"] == 50 * 20 + 4 * 45


def test_a_zero_count_gets_a_one_sided_bound_over_its_subjects_never_zero_zero():
    emb, subj, grp = one_person_dominates()
    scores = pair_scores(emb, subj, grp)
    rows = per_group_error_rates(scores, threshold=1.01, n_boot=200)  # no cosine is above: nothing matches
    fmr = next(r for r in rows if r["metric"] == "fmr" and r["group"] == "g")
    assert fmr["k"] == 0 and fmr["value"] == 0.0 and fmr["ci_method"] == "clopper_pearson_upper"
    # one-sided Clopper-Pearson 95% over the 11 subjects: 1 - 0.05^(1/11) = 0.2384 (rule of three: 3/11 = 0.27)
    assert (fmr["ci_lo"], fmr["ci_hi"]) == pytest.approx((0.0, 1 - 0.05 ** (1 / 11)))
    # every genuine pair fails (k = n): the bound is one-sided from below
    fnmr = next(r for r in rows if r["metric"] == "fnmr" and r["group"] == "g")
    assert fnmr["k"] == fnmr["n"] and fnmr["ci_method"] == "clopper_pearson_lower"
    assert (fnmr["ci_lo"], fnmr["ci_hi"]) == pytest.approx((0.05 ** (1 / 11), 1.0))


def five_of_forty_set():
    """London's black women: 5 subjects x 2 images -> 10 subject pairs x 4 image pairs = 40 impostor pairs.
    Subjects A and B look alike (their 4 image pairs match) and A's second image matches C's first: 5 of 40.
    A second group of 20 well-separated subjects shares the resampling."""
    dims = 64
    basis = np.eye(dims)
    emb, subjects, groups = [], [], []
    # cosines: A2.B = 0.74, A2.C1 = 0.85, A1.C1 = B.C1 = 0.29 (threshold 0.5)
    near = {"A": [basis[0], basis[0] + 0.9 * basis[8]], "B": [basis[0], basis[0]],
            "C": [basis[8] + 0.3 * basis[0], basis[2]],
            "D": [basis[3], basis[4]], "E": [basis[5], basis[6]]}
    for name, vecs in near.items():
        emb += vecs
        subjects += [name] * 2
        groups += ["black*female"] * 2
    for s in range(20):
        emb += [basis[10 + 2 * s], basis[10 + 2 * s] + 0.1 * basis[11 + 2 * s]]
        subjects += [f"w{s}"] * 2
        groups += ["white*male"] * 2
    return pair_scores(np.array(emb), subjects, groups, group_by="ethnicity*gender")


def test_the_interval_shown_is_the_subject_interval_not_wilson_over_pairs():
    scores = five_of_forty_set()
    rows = per_group_error_rates(scores, threshold=0.5, n_boot=1000, seed=0)
    r = next(r for r in rows if r["metric"] == "fmr" and r["group"] == "black*female")
    assert (r["k"], r["n"]) == (5, 40) and r["pair_value"] == 0.125
    # Wilson over 40 "independent" pairs: the [0.055, 0.261] the old tables printed; kept as an extra field
    assert (r["pair_ci_lo"], r["pair_ci_hi"]) == pytest.approx(wilson_interval(5, 40))
    assert wilson_interval(5, 40) == pytest.approx((0.0546, 0.2613), abs=1e-3)
    # weighted: subject pairs A-B 4/4, A-C 1/4, the 8 others 0 -> (1 + 0.25) / 10
    assert r["value"] == pytest.approx(0.125) and r["ci_method"] == "subject_bootstrap"
    # Resampling the 5 subjects: a resample without A (or without both B and C) has no false match at all.
    assert r["ci_lo"] == 0.0 and r["ci_hi"] > 0.35 and r["ci_hi"] > r["pair_ci_hi"] + 0.1


def test_no_genuine_pair_is_not_computable_and_fmr_is_still_reported():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((6, 8))
    rows = per_group_error_rates(pair_scores(emb, list("abcdef"), ["g1"] * 3 + ["g2"] * 3), threshold=0.3,
                                 n_boot=50)
    fnmr = [r for r in rows if r["metric"] == "fnmr"]
    assert {r["group"] for r in fnmr} == {"all", "g1", "g2"}
    assert all(r["value"] is None and r["status"] == "not_computable" and r["reason"] == NO_GENUINE for r in fnmr)
    fmr = {r["group"]: r for r in rows if r["metric"] == "fmr"}
    assert fmr["all"]["n"] == 15 and fmr["g1"]["n"] == 3 and fmr["g1"]["value"] is not None
    assert disparity_rows(rows, "fnmr") == []  # nothing to compare, and no error


def test_one_subject_has_no_impostors_no_tuned_threshold_but_fixed_cutoffs():
    scores = pair_scores(np.array([at(0), at(10), at(50)]), ["A"] * 3, ["g"] * 3)
    assert scores.n_impostor == 0
    with pytest.raises(InputError) as err:
        threshold_at_fmr(scores)
    assert str(err.value) == NO_IMPOSTORS.format(what="threshold_at_fmr")
    rows = per_group_error_rates(scores, threshold=None, fixed_thresholds=[0.9], n_boot=20)
    tuned = [r for r in rows if r["threshold_kind"] == "tuned"]
    assert {r["metric"] for r in tuned} == {"fmr", "fnmr"} and all(r["value"] is None for r in tuned)
    fixed = {(r["metric"], r["group"]): r for r in rows if r["threshold_kind"] == "fixed"}
    # cos 10 = .985 matches, cos 50 = .643 and cos 40 = .766 do not: 2 of 3
    assert fixed[("fnmr", "g")]["value"] == pytest.approx(2 / 3) and fixed[("fmr", "g")]["value"] is None


def test_scoring_a_set_with_one_image_per_subject_completes(tmp_path):
    """Issue 10: every subject has one image. Scoring used to stop (disparity_rows found no 'fnmr' row, exit 2),
    leaving the run partial; now FNMR says why it is missing and FMR is reported."""
    import json
    import types

    from harness.scoring import score_run

    (tmp_path / "samples").mkdir()
    rng = np.random.default_rng(0)
    with open(tmp_path / "samples" / "m--onnx-fp32.jsonl", "w") as f:
        for i in range(12):
            f.write(json.dumps({"sample_id": f"s{i}", "dataset": "x", "status": "ok", "fta_reason": None,
                                "subject": f"p{i}", "gender": "f" if i % 2 else "m",
                                "embedding": rng.standard_normal(8).tolist()}) + "\n")
    doc = {"run_id": "r", "data": {"datasets": [{"id": "x", "default_group_by": ["gender"]}]},
           "entries": [{"entry": "m--onnx-fp32", "model": "m", "variant": "onnx-fp32", "task": "verification",
                        "status": "ok"}]}
    cfg = types.SimpleNamespace(reference_run=None, seed=0, n_boot=50, target_fmr=0.1, cutoffs=(0.8,))
    m = score_run(tmp_path, doc, cfg)["entries"][0]["metrics"]
    tuned = [r for r in m["rates"] if r["threshold_kind"] == "tuned"]
    fnmr = [r for r in tuned if r["metric"] == "fnmr"]
    assert {r["group"] for r in fnmr} == {"all", "f", "m"}
    assert all(r["value"] is None and r["reason"] == NO_GENUINE and r["dataset"] == "x" for r in fnmr)
    fmr = {r["group"]: r for r in tuned if r["metric"] == "fmr"}
    assert fmr["all"]["n"] == 66 and fmr["all"]["value"] is not None and fmr["f"]["ci_hi"] > 0
    assert m["verification"]["x"]["n_genuine"] == 0


def one_subject_holds_every_error():
    """Issue 16's case: a group of 8 people whose 11 false non-matches all belong to one of them. Subject p0 has
    12 images, one of which points elsewhere (its 11 pairs with p0's other images fail at threshold 0.5); the 7
    others have 2 tight images each. A second group of 12 well-separated subjects shares the resampling."""
    basis = np.eye(64)
    emb, subjects, groups = [], [], []
    for i in range(12):
        emb.append(basis[1] if i == 0 else basis[0] + 0.05 * i * basis[2 + i])
        subjects.append("p0")
        groups.append("g")
    for s in range(1, 8):
        emb += [basis[16 + 2 * s], basis[16 + 2 * s] + 0.1 * basis[17 + 2 * s]]
        subjects += [f"p{s}"] * 2
        groups += ["g"] * 2
    for s in range(12):
        emb += [basis[40 + s], basis[40 + s] + 0.1 * basis[63]]
        subjects += [f"q{s}"] * 2
        groups += ["h"] * 2
    return pair_scores(np.array(emb), subjects, groups)


def test_one_subject_holding_every_error_never_narrows_the_interval_below_the_zero_count_bound():
    from harness.metrics import zero_count_interval

    scores = one_subject_holds_every_error()
    rows = per_group_error_rates(scores, threshold=0.5, n_boot=1000, seed=0)
    fnmr = next(r for r in rows if r["metric"] == "fnmr" and r["group"] == "g")
    assert (fnmr["k"], fnmr["n"], fnmr["n_subjects"]) == (11, 66 + 7, 8)
    assert fnmr["value"] == pytest.approx((11 / 66) / 8)
    # No error at all among 8 subjects would give [0, 1 - 0.05^(1/8)] = [0, 0.312]; 11 errors must not say less.
    bound = zero_count_interval(0, 8)[1]
    assert bound == pytest.approx(0.3123, abs=1e-4)
    assert fnmr["ci_lo"] == 0.0 and fnmr["ci_hi"] >= bound
    assert fnmr["ci_method"] == "subject_bootstrap_floored"
    # The floor is what moved it: the bootstrap alone stays at most p0's own FNMR (11/66), drawn 8 times of 8.
    from harness.metrics.verification import _Estimator
    est = _Estimator(scores, 0.5)
    from harness.metrics.bootstrap import resample_counts
    boot = est.rates(resample_counts(np.random.default_rng(0), scores.subjects.size, 1000))[
        ("fnmr", list(scores.groups).index("g"))]
    assert np.nanmax(boot) <= 11 / 66 + 1e-12 < bound
    # The well-separated group has no error and keeps its one-sided bound over its 12 subjects.
    h = next(r for r in rows if r["metric"] == "fnmr" and r["group"] == "h")
    assert h["ci_method"] == "clopper_pearson_upper" and h["ci_hi"] == pytest.approx(1 - 0.05 ** (1 / 12))


def test_the_floor_leaves_a_wide_bootstrap_interval_alone_and_handles_no_valid_resample():
    from harness.metrics.rates import subject_interval_floor

    # 40 subjects: the floor is 1 - 0.05^(1/40) = 0.0722; an interval already above it is unchanged.
    assert subject_interval_floor(0.1, 0.3, 40) == (0.1, 0.3, False)
    lo, hi, floored = subject_interval_floor(0.0, 0.01, 40)
    assert (lo, floored) == (0.0, True) and hi == pytest.approx(1 - 0.05 ** (1 / 40))
    # mirrored at the top: every subject in error cannot give a lower bound above 0.05^(1/n)
    lo, hi, floored = subject_interval_floor(0.99, 1.0, 40)
    assert lo == pytest.approx(0.05 ** (1 / 40)) and hi == 1.0 and floored
    # no resample defined the rate (a bootstrap with nothing in it): nothing is claimed
    assert subject_interval_floor(None, None, 8) == (0.0, 1.0, True)
    with pytest.raises(InputError):
        subject_interval_floor(0.0, 0.1, 0)
