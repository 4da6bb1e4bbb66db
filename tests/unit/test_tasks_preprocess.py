"""Preprocessing: letterbox geometry, the three normalisations, layouts, manifest parsing."""

import numpy as np
import pytest

from harness.errors import InputError
from harness.tasks.preprocess import (BLAZEFACE_INPUT, GENDER_DLIB_INPUT, MOBILEFACENET_INPUT, InputSpec,
                                      letterbox, normalize, preprocess, preprocess_batch, to_layout)


def test_letterbox_pads_the_short_side_and_maps_points_back():
    img = np.full((100, 200, 3), 255, np.uint8)  # wide: width fills, height padded top and bottom
    boxed, tf = letterbox(img, (128, 128))
    assert boxed.shape == (128, 128, 3)
    assert tf.pad_x == 0 and tf.pad_y == 32 and tf.scale_x == pytest.approx(0.64)
    assert boxed[:32].max() == 0 and boxed[96:].max() == 0 and boxed[32:96].min() == 255
    # image corners land on the content's corners in the input frame, and map back exactly
    corners_in = np.array([[0, 32], [128, 96]], float)
    np.testing.assert_allclose(tf.to_image(corners_in), [[0, 0], [200, 100]])


def test_letterbox_is_identity_at_the_model_size():
    img = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    boxed, tf = letterbox(img, (112, 112))
    np.testing.assert_array_equal(boxed, img)
    assert (tf.scale_x, tf.scale_y, tf.pad_x, tf.pad_y) == (1, 1, 0, 0)


@pytest.mark.parametrize("spec, pixel, expected", [
    (BLAZEFACE_INPUT, (0, 255, 127.5), (-1.0, 1.0, 0.0)),                       # x/127.5 - 1
    (MOBILEFACENET_INPUT, (0, 255, 127.5), (-127.5 / 128, 127.5 / 128, 0.0)),    # (x-127.5)/128
    (GENDER_DLIB_INPUT, (122.78, 117.0, 104.3), (0.0, 0.0, 0.0)),               # (x-mean)/256 at the mean
])
def test_normalisations_match_the_model_formulas(spec, pixel, expected):
    px = np.array(pixel, np.float32).reshape(1, 1, 3)
    np.testing.assert_allclose(normalize(px, spec.mean, spec.scale)[0, 0], expected, atol=1e-6)


def test_gender_scale_is_one_over_256():
    px = np.array([[[250.78, 117.0, 104.3]]], np.float32)
    assert normalize(px, GENDER_DLIB_INPUT.mean, GENDER_DLIB_INPUT.scale)[0, 0, 0] == pytest.approx(0.5)


def test_preprocess_layouts_and_dtype():
    img = np.zeros((40, 30, 3), np.uint8)
    img[..., 0] = 255  # red channel
    x, _ = preprocess(img, GENDER_DLIB_INPUT)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    y, _ = preprocess(img, BLAZEFACE_INPUT)
    assert y.shape == (1, 128, 128, 3)
    # channel order survives both layouts: red is channel 0
    assert x[0, 0, 16, 16] > x[0, 1, 16, 16] and y[0, 64, 64, 0] > y[0, 64, 64, 1]
    batch = preprocess_batch([np.zeros((112, 112, 3), np.uint8)] * 2, MOBILEFACENET_INPUT)
    assert batch.shape == (2, 112, 112, 3)


def test_to_layout_rejects_unknown_layout():
    with pytest.raises(InputError, match="layout 'CHW'"):
        to_layout(np.zeros((2, 2, 3), np.float32), "CHW")


def test_preprocess_rejects_non_rgb_uint8():
    with pytest.raises(InputError, match="RGB uint8"):
        preprocess(np.zeros((10, 10), np.uint8), BLAZEFACE_INPUT)


def test_input_spec_from_manifest_mapping():
    spec = InputSpec.from_mapping({"size": 32, "mean": [122.78, 117.0, 104.3], "scale": 1 / 256, "layout": "NCHW"})
    assert spec == GENDER_DLIB_INPUT
    assert InputSpec.from_mapping({"size": [128, 128], "mean": 127.5, "scale": 1 / 127.5}) == BLAZEFACE_INPUT
    with pytest.raises(InputError, match="models/x.toml"):
        InputSpec.from_mapping({"mean": 1}, where="models/x.toml")
    with pytest.raises(InputError, match="layout"):
        InputSpec.from_mapping({"size": 8, "layout": "HWC"})
