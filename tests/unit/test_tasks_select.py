"""Face choice: area x centrality, not score alone."""

import numpy as np

from harness.tasks.blazeface import Detection
from harness.tasks.select import centrality, choose_face


def _det(box, score):
    box = np.array(box, float)
    return Detection(box=box, score=score, keypoints=np.zeros((6, 2)))


def test_large_centred_subject_beats_a_higher_scoring_background_face():
    # 640x480 photo: subject in the middle, a sharper but small face at the top-left edge
    subject = _det([220, 140, 420, 360], score=0.80)
    background = _det([10, 10, 70, 80], score=0.97)
    assert choose_face([background, subject], (640, 480)) is subject


def test_large_off_centre_subject_beats_a_tiny_centred_face():
    subject = _det([380, 100, 600, 380], score=0.9)     # right third of the frame
    tiny = _det([305, 225, 335, 255], score=0.95)        # dead centre, 30 px
    assert choose_face([tiny, subject], (640, 480)) is subject


def test_equal_faces_fall_back_to_detector_order():
    a, b = _det([100, 100, 200, 200], 0.9), _det([440, 280, 540, 380], 0.8)  # mirror positions
    assert choose_face([a, b], (640, 480)) is a


def test_centrality_and_empty_input():
    assert centrality(np.array([310, 230, 330, 250.0]), (640, 480)) == 1.0
    assert centrality(np.array([-10, -10, 10, 10.0]), (640, 480)) == 0.0
    assert choose_face([], (640, 480)) is None
