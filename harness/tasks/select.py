"""Choose THE face of an image among the detector's faces.

Rule: maximise  area x centrality,  centrality = max(0, 1 - d / R),  d = distance from the box centre to the
image centre, R = half the image diagonal (so centrality is 1 at the centre and 0 in a corner).
Why not the best score: in in-the-wild photos the highest-scoring face is a background person about 3% of the
time (MODELS.md). The subject is framed large and near the centre; a background face is small, off-centre, or
both. The weight is linear (not a narrow Gaussian) so that a large off-centre subject still beats a tiny face that
happens to sit in the centre; ties keep the detector's order, i.e. the better score.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.tasks.blazeface import Detection


def centrality(box: np.ndarray, image_size: tuple[int, int]) -> float:
    """1 at the image centre, falling linearly to 0 at the corners. image_size is (w, h)."""
    w, h = image_size
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    d = float(np.hypot(*(centre - (w / 2, h / 2))))
    return max(0.0, 1.0 - d / (np.hypot(w, h) / 2))


def face_priority(det: Detection, image_size: tuple[int, int]) -> float:
    """The quantity `choose_face` maximises: box area (px^2) x centrality."""
    return det.area * centrality(det.box, image_size)


def choose_face(dets: Sequence[Detection], image_size: tuple[int, int]) -> Detection | None:
    """The subject's face (see module docstring), or None when there is no detection. image_size is (w, h)."""
    if not dets:
        return None
    # max() keeps the first of equals; dets arrive best score first, so score breaks ties.
    return max(dets, key=lambda d: face_priority(d, image_size))
