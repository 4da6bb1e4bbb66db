"""Calibration splits on the shared samples: deterministic, disjoint, subject-disjoint, seed-sensitive."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from harness.data.dataset import load_dataset
from harness.data.splits import calibration_split, evaluation_frame
from harness.errors import InputError


def shared_data() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


@pytest.fixture(scope="module")
def fairface():
    return load_dataset("fairface-sample", shared_data())


@pytest.fixture(scope="module")
def london():
    return load_dataset("london-frl", shared_data())


def test_same_seed_same_split_and_id(fairface):
    a = calibration_split(fairface, seed=0)
    b = calibration_split(fairface, seed=0)
    assert a == b and len(a.images) == 64
    assert a.id == "fairface-sample:calib:balanced[race*gender]:n64:seed0"
    assert a.sha256 == hashlib.sha256("\n".join(sorted(a.images)).encode()).hexdigest()
    assert list(a.images) == sorted(a.images)


def test_seed_changes_the_images(fairface):
    assert set(calibration_split(fairface, seed=0).images) != set(calibration_split(fairface, seed=1).images)
    assert calibration_split(fairface, seed=1).id.endswith(":seed1")


def test_balanced_mix_spreads_over_every_cell(fairface):
    split = calibration_split(fairface, seed=3, size=70)
    assert len(split.composition) == 14 and set(split.composition.values()) == {5}
    assert sum(split.composition.values()) == 70


def test_as_is_and_single_group_mixes(fairface):
    as_is = calibration_split(fairface, seed=0, size=40, mix="as-is")
    assert len(as_is.images) == 40 and as_is.id == "fairface-sample:calib:as-is:n40:seed0"
    only = calibration_split(fairface, seed=0, size=20, mix="group:race=Indian", group_by=["gender"])
    images = set(only.images)
    assert fairface.frame.loc[fairface.frame["image"].isin(images), "race"].eq("Indian").all()
    assert set(only.composition) <= {"female", "male"} and sum(only.composition.values()) == 20


def test_evaluation_is_the_complement(fairface):
    split = calibration_split(fairface, seed=0)
    evaluation = evaluation_frame(fairface, split)
    assert len(evaluation) == len(fairface.frame) - 64
    assert not set(evaluation["image"]) & set(split.images)


def test_subjects_never_on_both_sides(london):
    split = calibration_split(london, seed=5, size=31)  # odd size: whole subjects of 2 images cannot fill it
    calib = london.frame[london.frame["image"].isin(split.images)]
    assert len(split.images) == 30 and calib["subject"].value_counts().eq(2).all()
    evaluation = evaluation_frame(london, split)
    assert not set(evaluation["subject"]) & set(calib["subject"])
    assert len(evaluation) + len(calib) == len(london.frame)


def test_split_from_another_dataset_leaves_the_evaluation_set_whole(fairface, london):
    split = calibration_split(fairface, seed=0)
    assert evaluation_frame(london, split) is london.frame


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mix": "group:race=Martian"}, "empty group race=Martian"),
        ({"mix": "stratified"}, "calibration mix 'stratified'"),
        ({"size": 10_000}, "calibration size 10000 exceeds the 572 images"),
        ({"group_by": ["ethnicity"]}, "unknown group attribute.*ethnicity"),
    ],
)
def test_bad_requests_are_one_line_input_errors(fairface, kwargs, message):
    with pytest.raises(InputError, match=message):
        calibration_split(fairface, seed=0, **kwargs)
