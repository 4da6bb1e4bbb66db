"""Alignment: the similarity estimator, the two templates, dlib's chip geometry, and the anti-aliasing modes."""

import cv2
import numpy as np
import pytest

from harness.errors import InputError
from harness.tasks.align import (ARCFACE_112, DLIB_5PT, AlignRecipe, align, chip_to_image, detector_points,
                                 similarity_transform)
from harness.tasks.resample import _pyramid_down, pixel_spacing, warp_chip

EYES = ("left_eye", "right_eye")
FOUR = ("left_eye", "right_eye", "nose_tip", "mouth_centre")
GENDER = AlignRecipe(points=EYES, template="dlib-5pt", size=32, padding=0.2, antialias="pyramid")
ARCFACE = AlignRecipe(points=FOUR, template="arcface-112", size=112, antialias="none")


def _similarity(scale, angle, t):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, t[0]], [scale * s, scale * c, t[1]]])


def _apply(m, pts):
    return np.asarray(pts) @ m[:, :2].T + m[:, 2]


def test_recovers_an_exact_similarity_and_agrees_with_opencv():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (4, 2))
    m = _similarity(0.37, 0.4, (12.0, -3.0))
    dst = _apply(m, src)
    np.testing.assert_allclose(similarity_transform(src, dst), m, atol=1e-9)
    ocv, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    np.testing.assert_allclose(similarity_transform(src, dst), ocv, atol=1e-5)


def test_two_points_are_exact_and_mirrored_points_do_not_flip_the_face():
    src = np.array([[10.0, 10], [30, 10]])
    np.testing.assert_allclose(similarity_transform(src, src[::-1]) @ [10, 10, 1], [30, 10], atol=1e-9)
    # A mirror image of the points has no proper similarity; the estimate must still be a rotation (det > 0).
    src4 = np.array([[0.0, 0], [10, 0], [5, 5], [5, 10]])
    m = similarity_transform(src4, src4 * [-1, 1])
    assert np.linalg.det(m[:, :2]) > 0


def test_dlib_template_puts_the_eye_centres_where_the_gender_model_was_trained():
    np.testing.assert_allclose(GENDER.target, [[9.77, 9.63], [21.78, 9.62]], atol=0.01)  # MODELS.md figures
    four = AlignRecipe(points=FOUR, template="dlib-5pt", size=32, padding=0.2).target
    # nose tip and mouth centre on the face's midline, below the eyes, in order
    assert abs(four[2, 0] - 16) < 0.5 and abs(four[3, 0] - 16) < 0.5
    assert four[0, 1] < four[2, 1] < four[3, 1] < 32
    # the padding formula scales with size
    np.testing.assert_allclose(AlignRecipe(points=EYES, template="dlib-5pt", size=150, padding=0.2).target,
                               GENDER.target * 150 / 32)


def test_dlib_geometry_is_its_chip_rectangle_not_the_fit():
    # Eyes drawn at 5x the template: dlib's fit has scale 5, but the chip spans a (32 * 5)-px rectangle from its
    # first to its last pixel, so a chip pixel is (160 - 1) / 31 image px and the chip centre (16, 16) of the
    # template lands between pixels 15 and 16.
    eyes = _apply(_similarity(5.0, 0.3, (40.0, 25.0)), GENDER.target)
    a = chip_to_image(GENDER, eyes)
    assert pixel_spacing(a) == pytest.approx(159 / 31)
    inv = np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]
    expected = 15.5 + (GENDER.target - 16) * 5.0 / (159 / 31)
    np.testing.assert_allclose(_apply(inv, eyes), expected, atol=1e-9)


def test_arcface_template_mouth_is_the_mean_of_the_corners():
    np.testing.assert_allclose(ARCFACE_112.points["mouth_centre"], [56.1396, 92.2848])
    np.testing.assert_allclose(ARCFACE.target, np.array([ARCFACE_112.points[p] for p in FOUR]))


def test_arcface_chip_puts_marked_points_on_the_template():
    # draw four dots at a rotated, scaled copy of the template, then align back and find the dots
    img = np.zeros((400, 400, 3), np.uint8)
    src = _apply(_similarity(2.5, 0.3, (120.0, 60.0)), ARCFACE.target)
    for x, y in src:
        cv2.circle(img, (round(x), round(y)), 6, (255, 255, 255), -1)
    for antialias in ("none", "area", "pyramid"):
        chip = align(img, src, AlignRecipe(points=FOUR, template="arcface-112", size=112, antialias=antialias))
        assert chip.shape == (112, 112, 3)
        n, _, _, centroids = cv2.connectedComponentsWithStats((chip[..., 0] > 100).astype(np.uint8))
        assert n == 5, antialias
        found = centroids[1:][np.argsort(centroids[1:, 1] * 1000 + centroids[1:, 0])]
        want = ARCFACE.target[np.argsort(ARCFACE.target[:, 1] * 1000 + ARCFACE.target[:, 0])]
        np.testing.assert_allclose(found, want, atol=1.0, err_msg=antialias)


def test_antialiasing_removes_the_alias_of_fine_stripes():
    # 1-px stripes seen at 6 image px per chip px: a single bilinear warp picks stripes (alias, near 0 or 255);
    # the pyramid and area modes average them to mid grey, as any low-pass filter must.
    img = np.zeros((600, 600, 3), np.uint8)
    img[:, ::2] = 255
    a = np.array([[6.0, 0, 100], [0, 6.0, 100]])
    none, area, pyr = (warp_chip(img, a, 32, m).astype(float) for m in ("none", "area", "pyramid"))
    assert np.abs(none - 127.5).mean() > 100
    assert np.abs(area - 127.5).mean() < 3
    assert np.abs(pyr - 127.5).mean() < 3


def test_pyramid_level_is_dlibs_5_tap_filter_truncated():
    # dlib's level pixel (r, c) is centred on input (2r + 2, 2c + 2); OpenCV's pyrDown on (2r, 2c), same kernel,
    # rounded instead of truncated: they differ by at most one grey level, and dlib's is never the larger.
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (41, 37, 3), dtype=np.uint8)
    mine = _pyramid_down(img).astype(int)
    assert mine.shape == ((41 - 3) // 2, (37 - 3) // 2, 3)
    ref = cv2.pyrDown(img).astype(int)[1:1 + mine.shape[0], 1:1 + mine.shape[1]]
    assert ((ref - mine) >= 0).all() and ((ref - mine) <= 1).all()
    assert _pyramid_down(img[:8]).shape == (0, 0, 3)


def test_outside_the_image_is_black():
    img = np.full((50, 50, 3), 200, np.uint8)
    a = np.array([[1.0, 0, 40], [0, 1.0, 40]])  # the chip's far half lies beyond the right/bottom edges
    for mode in ("none", "area", "pyramid"):
        chip = warp_chip(img, a, 32, mode)
        assert (chip[:5, :5] == 200).all() and (chip[-5:, -5:] == 0).all(), mode


def test_detector_points_follow_the_recipe_order():
    kps = np.arange(12, dtype=float).reshape(6, 2)
    np.testing.assert_array_equal(detector_points(kps, GENDER), kps[:2])
    rev = AlignRecipe(points=("mouth_centre", "left_eye"), template="dlib-5pt", size=32, padding=0.2)
    np.testing.assert_array_equal(detector_points(kps, rev), kps[[3, 0]])
    dlib5 = AlignRecipe(points=("left_eye_outer", "nose_base"), template="dlib-5pt", size=32, padding=0.2)
    with pytest.raises(InputError, match="detector gives"):
        detector_points(kps, dlib5)


@pytest.mark.parametrize("kwargs, message", [
    ({"template": "mtcnn"}, "template 'mtcnn'"),
    ({"points": ("left_eye", "chin")}, "no point"),
    ({"points": ("left_eye",)}, "at least 2"),
    ({"points": ("left_eye", "left_eye")}, "at least 2 distinct"),
    ({"template": "arcface-112", "padding": 0.2}, "takes no padding"),
    ({"padding": -0.1}, "padding"),
    ({"antialias": "gauss"}, "antialias 'gauss'"),
    ({"interpolation": "nearest"}, "interpolation 'nearest'"),
    ({"size": 1}, "size"),
])
def test_bad_recipes_are_refused(kwargs, message):
    base = {"points": EYES, "template": "dlib-5pt", "size": 32, "padding": 0.2}
    with pytest.raises(InputError, match=message):
        AlignRecipe(**{**base, **kwargs})


def test_bad_points_are_refused():
    img = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(InputError, match="takes 2 points"):
        align(img, np.zeros((4, 2)), GENDER)
    with pytest.raises(InputError, match="coincide"):
        align(img, np.ones((2, 2)), GENDER)
    with pytest.raises(InputError, match="not finite"):
        align(img, np.array([[np.nan, 1], [2, 3]]), GENDER)
    assert set(DLIB_5PT.points) >= set(FOUR)
