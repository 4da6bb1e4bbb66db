"""Per-sample detection fields and the two hit rules."""

import json

import numpy as np
import pytest

from harness.errors import InputError
from harness.tasks.blazeface import Detection
from harness.tasks.boxes import box_iou
from harness.tasks.detection_eval import detection_fields, eye_error

GT_EYES = np.array([[100.0, 100], [200, 100]])


def _det(box=(80, 60, 220, 240), eyes=((105, 100), (200, 110))):
    kps = np.zeros((6, 2))
    kps[:2] = eyes
    return Detection(box=np.array(box, float), score=0.93, keypoints=kps)


def test_eye_error_is_mean_distance_over_inter_ocular():
    assert eye_error(np.array([[105.0, 100], [200, 110]]), GT_EYES) == pytest.approx((5 + 10) / 2 / 100)
    with pytest.raises(InputError, match="coincide"):
        eye_error(GT_EYES, np.zeros((2, 2)))


def test_box_iou():
    np.testing.assert_allclose(box_iou(np.array([0, 0, 10, 10.]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]])),
                               [1 / 3, 0])


def test_fields_with_eyes_rule_are_json_ready():
    f = detection_fields(_det(), gt_eyes=GT_EYES)
    assert f["det_found"] and f["det_hit"] is True and f["eye_err"] == pytest.approx(0.075)
    assert len(f["det_kps"]) == 6 and f["det_box"] == [80, 60, 220, 240]
    json.dumps(f)  # plain floats and lists, no numpy scalars


def test_eyes_rule_misses_when_an_eye_is_outside_the_box():
    assert detection_fields(_det(box=(150, 60, 260, 240)), gt_eyes=GT_EYES)["det_hit"] is False


def test_iou_rule_when_a_tight_box_exists():
    assert detection_fields(_det(), gt_eyes=GT_EYES, gt_box=np.array([80, 60, 220, 240.]))["det_hit"] is True
    # a loose landmark-extent box (as London's) fails IoU though the eyes are found: hence the "eyes" rule there
    loose = np.array([20, 0, 280, 330.])
    assert detection_fields(_det(), gt_eyes=GT_EYES, gt_box=loose)["det_hit"] is False
    assert detection_fields(_det(), gt_eyes=GT_EYES, gt_box=loose, hit_rule="eyes")["det_hit"] is True


def test_no_face_and_no_ground_truth():
    assert detection_fields(None, gt_eyes=GT_EYES) == {"det_found": False, "det_score": None, "det_box": None,
                                                       "det_kps": None, "det_hit": False, "eye_err": None}
    f = detection_fields(_det())
    assert f["det_hit"] is None and f["eye_err"] is None
    assert detection_fields(None)["det_hit"] is None
    with pytest.raises(InputError, match="hit_rule 'area'"):
        detection_fields(_det(), hit_rule="area")
