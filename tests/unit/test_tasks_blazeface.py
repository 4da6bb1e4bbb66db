"""BlazeFace decoding on synthetic raw outputs: anchors, both output conventions, weighted NMS.

(The real-model checks, ONNX and TFLite on London photos, are in test_tasks_pipeline.py.)
"""

import numpy as np
import pytest

from harness.errors import InputError
from harness.tasks.blazeface import decode, ssd_anchors, weighted_nms
from harness.tasks.preprocess import Letterbox

IDENTITY = Letterbox(scale_x=1.0, scale_y=1.0, pad_x=0.0, pad_y=0.0)


def test_anchor_grid_matches_mediapipe_front_model():
    a = ssd_anchors()
    assert a.shape == (896, 2)
    # stride 8: 16x16 cells, 2 anchors per cell, row-major (y outer, x inner)
    np.testing.assert_allclose(a[0], a[1])
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[32], [0.5 / 16, 1.5 / 16])
    # stride 16 (three layers merged): 8x8 cells, 6 anchors per cell, from index 512
    np.testing.assert_allclose(a[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def _raw(anchor: int, logit: float = 5.0, dx: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """TFLite-convention outputs with one confident face at `anchor`: 32x48 input px, keypoints at fixed offsets."""
    reg = np.zeros((1, 896, 16), np.float32)
    cls = np.full((1, 896, 1), -20.0, np.float32)
    reg[0, anchor, :4] = [dx, 0, 32, 48]
    reg[0, anchor, 4:] = np.arange(12) - 6  # keypoint k at (2k-6, 2k-5) px from the anchor centre
    cls[0, anchor, 0] = logit
    return reg, cls


def test_decode_single_face_geometry_in_input_and_image_pixels():
    reg, cls = _raw(anchor=600)
    centre = ssd_anchors()[600] * 128
    (det,) = decode({"regressors": reg, "classificators": cls}, IDENTITY)
    np.testing.assert_allclose(det.box, [centre[0] - 16, centre[1] - 24, centre[0] + 16, centre[1] + 24], atol=1e-4)
    np.testing.assert_allclose(det.keypoints[0], centre + [-6, -5], atol=1e-4)
    assert det.score == pytest.approx(1 / (1 + np.exp(-5)))
    # through a letterbox: image px = (input px - pad) / scale
    (det2,) = decode([reg, cls], Letterbox(scale_x=0.2, scale_y=0.2, pad_x=0.0, pad_y=16.0))
    np.testing.assert_allclose(det2.keypoints[0], (centre + [-6, -5] - [0, 16]) / 0.2, atol=1e-3)


def test_barracuda_split_outputs_decode_like_the_tflite_pair():
    reg, cls = _raw(anchor=700)
    # barracuda order and names; dict order shuffled to show decoding goes by shape, not by position
    split = {"Identity_3:0": reg[:, 512:], "Identity:0": cls[:, :512],
             "Identity_2:0": reg[:, :512], "Identity_1:0": cls[:, 512:]}
    (a,) = decode(split, IDENTITY)
    (b,) = decode([reg, cls], IDENTITY)
    np.testing.assert_allclose(a.box, b.box)
    np.testing.assert_allclose(a.keypoints, b.keypoints)


def test_score_threshold_and_saturated_logits():
    reg, cls = _raw(anchor=10, logit=0.0)  # sigmoid 0.5: kept at 0.5, dropped above
    assert len(decode([reg, cls], IDENTITY, score_threshold=0.5)) == 1
    assert decode([reg, cls], IDENTITY, score_threshold=0.6) == []
    cls[0, 10, 0] = 1e30  # an int8 variant can saturate; clipping keeps the score finite
    (det,) = decode([reg, cls], IDENTITY)
    assert det.score == pytest.approx(1.0)


def test_weighted_nms_averages_a_cluster_and_keeps_the_top_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    kps = np.stack([np.full((6, 2), v) for v in (0.0, 3.0, 100.0)])
    scores = np.array([0.9, 0.6, 0.7])
    out = weighted_nms(boxes, kps, scores, iou_threshold=0.3)
    assert [s for _, s, _ in out] == [0.9, 0.7]
    np.testing.assert_allclose(out[0][0], [0.4, 0, 10.4, 10])       # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(out[0][2], np.full((6, 2), 1.2))     # (0.9*0 + 0.6*3) / 1.5
    np.testing.assert_allclose(out[1][0], boxes[2])


def test_weighted_nms_keeps_faces_that_overlap_at_or_below_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)   # IoU 1/3
    out = weighted_nms(boxes, np.zeros((2, 6, 2)), np.array([0.9, 0.8]), iou_threshold=0.34)
    assert len(out) == 2
    assert len(weighted_nms(boxes, np.zeros((2, 6, 2)), np.array([0.9, 0.8]), iou_threshold=0.3)) == 1


@pytest.mark.parametrize("outputs, match", [
    ([np.zeros((1, 896, 16)), np.zeros((1, 896, 2))], "unexpected raw output shape"),
    ([np.zeros((1, 512, 16)), np.zeros((1, 896, 1))], "do not pair up"),
    ([np.zeros((1, 800, 16)), np.zeros((1, 800, 1))], "800 anchors"),
])
def test_malformed_outputs_are_one_clear_error(outputs, match):
    with pytest.raises(InputError, match=match):
        decode(outputs, IDENTITY)
