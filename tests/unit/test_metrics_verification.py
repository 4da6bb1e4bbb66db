"""Pair scoring, FMR-tuned threshold, per-group FMR/FNMR and the subject bootstrap."""

from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import InputError
from harness.metrics import (
    disparity_rows, pair_scores, per_group_error_rates, subject_bootstrap, threshold_at_fmr,
)
from harness.metrics.inputs import BAD_EMBEDDING_ROW, BAD_TARGET_FMR, SUBJECT_IN_TWO_GROUPS
from harness.metrics.verification import _resampled_rates


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
    assert s.impostor[(0, 0)] == pytest.approx([0.0, 0.42262], abs=1e-5)
    assert s.impostor[(1, 1)] == pytest.approx([-0.76604, 0.93969], abs=1e-5)
    assert s.impostor[(0, 1)].size == 9 and s.n_impostor == 13  # 3 g1 rows x 3 g2 rows
    assert np.all(np.diff(s.impostor[(0, 1)]) >= 0)


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
    full = emb @ emb.T
    imp = {(0, 0): [], (0, 1): [], (1, 1): []}
    gen = []
    for i, j in combinations(range(len(subj)), 2):
        if subj[i] == subj[j]:
            gen.append(full[i, j])
        else:
            key = tuple(sorted((int(grp[i] == "g2"), int(grp[j] == "g2"))))
            imp[key].append(full[i, j])
    assert sorted(s.genuine) == pytest.approx(sorted(gen), abs=1e-6)
    for key, values in imp.items():
        assert s.impostor[key] == pytest.approx(sorted(values), abs=1e-6)


def test_resampled_rates_equal_rates_recomputed_on_the_resampled_set():
    emb, subj, grp = random_set(2)
    scores = pair_scores(emb, subj, grp)
    t = 0.1
    w = np.random.default_rng(5).multinomial(12, [1 / 12] * 12).astype(float)  # subject multiplicities
    fmr, fnmr = _resampled_rates(scores, t, w[None, :])
    # Brute force: copy each subject's rows w_s times; impostors = rows of different subjects in one group;
    # genuine pairs only within one copy (the documented omission).
    rows = [(i, c) for s_i, name in enumerate(scores.subjects) for c in range(int(w[s_i]))
            for i in np.flatnonzero(subj == name)]
    full = emb @ emb.T
    for g, name in enumerate(scores.groups):
        members = [(i, c) for i, c in rows if grp[i] == name]
        imp = [full[a, b] for (a, ca), (b, cb) in combinations(members, 2) if subj[a] != subj[b]]
        gen = [full[a, b] for (a, ca), (b, cb) in combinations(members, 2) if subj[a] == subj[b] and ca == cb]
        assert fmr[0, g] == pytest.approx(np.mean(np.array(imp) > t) if imp else np.nan, nan_ok=True)
        assert fnmr[0, g] == pytest.approx(np.mean(np.array(gen) <= t) if gen else np.nan, nan_ok=True)


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
    assert max((g for g in fmr if g != "all"), key=lambda g: fmr[g]["value"]) == "black"
    assert "east_asian/white" not in fmr  # one subject: no same-group impostor pair, no row
    ratio = next(r for r in disparity_rows(rows, "fmr") if r["summary"] == "max_min_ratio")
    assert ratio["max_group"] == "black" and ratio["n_groups"] == 4
    boot = subject_bootstrap(scores, threshold=t, n_boot=200, seed=3)
    black = next(r for r in boot if r["metric"] == "fmr" and r["group"] == "black")
    assert black["boot_lo"] <= black["value"] <= black["boot_hi"]
    assert black["boot_lo"] > fmr["white"]["value"]  # the planted effect is outside the noise


def test_bootstrap_survives_a_group_missing_from_resamples_and_is_seeded():
    emb, labels = planted_london_set()
    scores = pair_scores(emb, labels["subject"], labels["ethnicity"], group_by="ethnicity")
    t = threshold_at_fmr(scores, 1e-2)
    a = subject_bootstrap(scores, threshold=t, n_boot=300, seed=11)
    assert a == subject_bootstrap(scores, threshold=t, n_boot=300, seed=11)
    assert a != subject_bootstrap(scores, threshold=t, n_boot=300, seed=12)
    # The one east_asian/white subject is absent from about (1-1/102)^102 = 37% of resamples: NaN, skipped.
    lone = next(r for r in a if r["metric"] == "fnmr" and r["group"] == "east_asian/white")
    assert 0 < lone["n_valid"] < 300 and lone["boot_lo"] is not None
