"""Alignment: the similarity estimator, the two templates, and warping points onto them."""

import cv2
import numpy as np
import pytest

from harness.errors import InputError, UnknownIdError
from harness.tasks.align import (ARCFACE_112, DLIB_CHIP_32, align, dlib_chip_template, similarity_transform,
                                template_for)


def _similarity(scale, angle, t):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, t[0]], [scale * s, scale * c, t[1]]])


def test_recovers_an_exact_similarity_and_agrees_with_opencv():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (4, 2))
    m = _similarity(0.37, 0.4, (12.0, -3.0))
    dst = src @ m[:, :2].T + m[:, 2]
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


def test_dlib_template_lands_eyes_where_the_gender_model_was_trained():
    eyes = DLIB_CHIP_32.points[:2]
    np.testing.assert_allclose(eyes, [[9.8, 9.6], [21.8, 9.6]], atol=0.05)  # MODELS.md figures
    # nose tip and mouth centre on the face's midline, below the eyes, in order
    assert abs(DLIB_CHIP_32.points[2, 0] - 16) < 0.5 and abs(DLIB_CHIP_32.points[3, 0] - 16) < 0.5
    assert eyes[0, 1] < DLIB_CHIP_32.points[2, 1] < DLIB_CHIP_32.points[3, 1] < 32
    # the padding formula scales with size
    np.testing.assert_allclose(dlib_chip_template(150, 0.2).points, DLIB_CHIP_32.points * 150 / 32)


def test_arcface_template_mouth_is_the_mean_of_the_corners():
    np.testing.assert_allclose(ARCFACE_112.points[3], [56.1396, 92.2848])


def test_align_puts_marked_points_on_the_template():
    # draw four dots at a rotated, scaled copy of the template, then align back and find the dots
    img = np.zeros((400, 400, 3), np.uint8)
    m = _similarity(2.5, 0.3, (120.0, 60.0))
    src = ARCFACE_112.points @ m[:, :2].T + m[:, 2]
    for x, y in src:
        cv2.circle(img, (round(x), round(y)), 6, (255, 255, 255), -1)
    chip = align(img, src, ARCFACE_112)
    assert chip.shape == (112, 112, 3)
    n, _, _, centroids = cv2.connectedComponentsWithStats((chip[..., 0] > 127).astype(np.uint8))
    assert n == 5
    found = centroids[1:][np.argsort(centroids[1:, 1] * 1000 + centroids[1:, 0])]
    want = ARCFACE_112.points[np.argsort(ARCFACE_112.points[:, 1] * 1000 + ARCFACE_112.points[:, 0])]
    np.testing.assert_allclose(found, want, atol=1.0)


def test_align_size_override_and_bad_point_counts():
    img = np.zeros((100, 100, 3), np.uint8)
    assert align(img, DLIB_CHIP_32.points[:2] * 3, DLIB_CHIP_32, size=64).shape == (64, 64, 3)
    with pytest.raises(InputError, match="5 points"):
        align(img, np.zeros((5, 2)), DLIB_CHIP_32)
    with pytest.raises(InputError, match="coincide"):
        align(img, np.ones((2, 2)), DLIB_CHIP_32)


def test_template_for_manifest_resize_values():
    assert template_for("align-arcface", 112) is ARCFACE_112
    np.testing.assert_allclose(template_for("align-arcface", 224).points, ARCFACE_112.points * 2)
    np.testing.assert_allclose(template_for("align-dlib-chip", 32).points, DLIB_CHIP_32.points)
    with pytest.raises(UnknownIdError, match="unknown alignment 'letterbox'"):
        template_for("letterbox", 128)
